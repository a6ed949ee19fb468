"""Accounts: passwords (argon2id, hashed off the event loop), session tokens and login rate limits.

Passwords are never stored or logged in clear: only their argon2id hash is kept. Tokens are random
(32 bytes, URL-safe); only their SHA-256 is stored, so a copy of the database logs nobody in. Wrong
passwords are limited per alias and per source address.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import Counter

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dmds.core.ports import Store
from dmds.core.ratelimit import FailureLimiter
from dmds.errors import BadCredentials, BadToken, Blocked, InvalidField, RateLimited
from dmds.settings import AccountSettings

# Verified against when the alias does not exist, so that a wrong alias costs the same time as a
# wrong password and does not reveal which aliases have accounts.
_DUMMY_PASSWORD = "not a password"  # noqa: S105


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(self, store: Store, settings: AccountSettings) -> None:
        self._store = store
        self.settings = settings
        # parallelism 1: one login must not occupy every core of a 2-core server.
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib, parallelism=1
        )
        self._dummy_hash = self._hasher.hash(_DUMMY_PASSWORD)
        self._by_alias = FailureLimiter(settings.login_failures, settings.login_window_s)
        # An address may try a few aliases: more room than per alias, still a brake on spraying.
        self._by_address = FailureLimiter(settings.login_failures * 4, settings.login_window_s)
        self._registrations = FailureLimiter(settings.login_failures * 4, settings.login_window_s)
        # Password checks in progress per alias and per address (keys "alias:..." and "address:...").
        self._verifying: Counter[str] = Counter()

    def registering(self, address: str, now: float) -> None:
        """Count a registration with a password from `address`; RateLimited past the limit."""
        self._registrations.check(address, now)
        self._registrations.failed(address, now)

    def check_password(self, password: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise InvalidField(f"password shorter than {self.settings.min_password_length} characters")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        def verify() -> bool:
            try:
                return (
                    self._hasher.verify(password_hash or self._dummy_hash, password)
                    and password_hash is not None
                )
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    async def authenticate(self, alias: str, password: str, address: str, now: float) -> None:
        """Check `alias`'s password. Raises RateLimited before trying when over the limit,
        BadCredentials for a wrong alias or password (the same error for both), and Blocked for the
        right password of a blocked alias."""
        self._by_alias.check(alias, now)
        self._by_address.check(address, now)
        # A failure is recorded only once its hash is done: without a bound on the checks in progress,
        # N wrong passwords sent at once would all pass the checks above and cost N argon2 hashes.
        keys = (f"alias:{alias}", f"address:{address}")
        if (
            self._verifying[keys[0]] >= self._by_alias.max_failures
            or self._verifying[keys[1]] >= self._by_address.max_failures
        ):
            raise RateLimited(f"too many password checks in progress for {alias}", 1.0)
        self._verifying.update(keys)
        try:
            record = await self._store.user(alias)
            ok = await self._verify(record.password_hash if record else None, password)
        finally:
            self._verifying.subtract(keys)
            for key in keys:
                if self._verifying[key] <= 0:
                    del self._verifying[key]
        if not ok:
            self._by_alias.failed(alias, now)
            self._by_address.failed(address, now)
            raise BadCredentials(alias)
        self._by_alias.succeeded(alias)
        if record is not None and record.blocked:
            # Said only to whoever knows the password: a guesser learns nothing more.
            raise Blocked(f"{alias} is blocked")

    async def open_session(self, alias: str, now: float) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires_at = now + self.settings.token_ttl_s
        await self._store.create_session(alias, token_hash(token), now, expires_at)
        return token, expires_at

    async def resume(self, token: str, now: float) -> tuple[str, float]:
        """(alias, expires_at) of a valid token; BadToken otherwise."""
        found = await self._store.session_user(token_hash(token), now)
        if found is None:
            raise BadToken("unknown or expired session token")
        return found

    async def close_session(self, alias: str, token: str) -> None:
        await self._store.revoke_sessions(alias, token_hash(token))
