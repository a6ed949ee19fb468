"""What an operator may do to users (the admin commands): list and show them, disconnect, delete,
block and unblock. Everything goes through the `Service`, which alone knows who is online where,
and the store; every action is logged once, at INFO (WARNING for a deletion), naming who asked
(`actor`: "admin" and the peer address of the admin request, or the local user for the store opened
directly) and with the alias and the action as `extra` fields, for a JSON log.

Blocking is durable (the store's `blocked_aliases`) and means: no login, no classic CONNECT, no
REGISTER of the alias by anyone, the session tokens revoked and the user taken offline at once.
Messages to a blocked user are still accepted and kept, as for anyone offline: a block is a
suspension, undone by `unblock`, and what was sent meanwhile is then delivered (`delete` drops it).
Refusing them would cost a look-up on every message of the hot path of both engines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dmds.core.model import Presence, UserInfo
from dmds.core.ports import Store
from dmds.core.service import Service
from dmds.errors import Blocked, Kicked, UnknownUser

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserStatus(UserInfo):
    """A user with where they are online."""

    online: bool
    #: the node serving them (None: offline, or the only node)
    node: str | None
    #: "classic" or "session" while online, else None
    protocol: str | None


@dataclass(frozen=True, slots=True)
class Blocking:
    """What `block` did."""

    alias: str
    #: False: it was blocked already
    newly: bool
    registered: bool
    #: where the user was online (and is no longer), None if they were not
    was_online: Presence | None


class Operator:
    def __init__(self, service: Service, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._service, self._store, self._clock = service, store, clock

    def _status(self, info: UserInfo) -> UserStatus:
        where = self._service.presence(info.alias)
        return UserStatus(
            info.alias,
            info.full_name,
            info.registered_at,
            info.stored_messages,
            info.stored_bytes,
            info.protected,
            info.blocked,
            online=where is not None,
            node=(where.node or None) if where is not None else None,
            protocol=None if where is None else "classic" if where.classic else "session",
        )

    async def users(self, prefix: str = "", after: str = "", limit: int = 100) -> list[UserStatus]:
        return [self._status(info) for info in await self._store.users(prefix, after, limit)]

    async def user(self, alias: str) -> UserStatus:
        info = await self._store.user_info(alias)
        if info is None:
            raise UnknownUser(alias)
        return self._status(info)

    async def is_blocked(self, alias: str) -> bool:
        return any(name == alias for name, _ in await self._store.blocked(alias, 1))

    async def disconnect(self, alias: str, actor: str) -> Presence | None:
        """End the user's connections; None if they were not online. Raises UnknownUser."""
        if await self._store.user_info(alias) is None:
            raise UnknownUser(alias)
        was = await self._service.kick(alias, Kicked("disconnected by the server's operator"))
        log.info(
            "%s: disconnect %s (%s)", actor, alias, _where(was),
            extra={"actor": actor, "action": "disconnect", "alias": alias},
        )  # fmt: skip
        return was

    async def delete(self, alias: str, actor: str) -> UserInfo:
        """Delete the account with everything stored for and about it (messages, receipts,
        sessions, attachments); a block of the alias stays. Returns what it had. Raises UnknownUser."""
        info = await self._store.user_info(alias)
        if info is None:
            raise UnknownUser(alias)
        await self._store.revoke_sessions(alias)  # no login with a token meanwhile
        was = await self._service.kick(alias, Kicked("account deleted by the server's operator"))
        await self._service.unregister(alias)
        log.warning(
            "%s: delete account %s (%d message(s) waiting dropped; %s)",
            actor, alias, info.stored_messages, _where(was),
            extra={"actor": actor, "action": "delete", "alias": alias},
        )  # fmt: skip
        return info

    async def block(self, alias: str, actor: str) -> Blocking:
        """Block the alias, registered or not (see the module's docstring)."""
        newly = await self._store.block(alias, self._clock())
        registered = await self._store.user_info(alias) is not None
        was = await self._service.kick(alias, Blocked(f"{alias} is blocked by the server's operator"))
        log.info(
            "%s: block %s (%s%s; %s)", actor, alias, "" if registered else "not registered, ",
            "newly blocked" if newly else "already blocked", _where(was),
            extra={"actor": actor, "action": "block", "alias": alias},
        )  # fmt: skip
        return Blocking(alias, newly, registered, was)

    async def unblock(self, alias: str, actor: str) -> bool:
        """False if the alias was not blocked."""
        done = await self._store.unblock(alias)
        log.info(
            "%s: unblock %s (%s)", actor, alias, "unblocked" if done else "was not blocked",
            extra={"actor": actor, "action": "unblock", "alias": alias},
        )  # fmt: skip
        return done

    def set_send_rate(self, rate: float, burst: int, actor: str) -> None:
        before = self._service.delivery
        self._service.set_send_rate(rate, burst)
        log.info(
            "%s: set max_send_rate %g, send_burst %d (were %g, %d)",
            actor, rate, burst, before.max_send_rate, before.send_burst,
            extra={"actor": actor, "action": "set", "setting": "send_rate"},
        )  # fmt: skip


def _where(entry: Presence | None) -> str:
    if entry is None:
        return "was not online"
    kind = "classic" if entry.classic else "session"
    return f"was online ({kind}{f' on node {entry.node}' if entry.node else ''})"
