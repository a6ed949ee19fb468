"""The one API every front-end calls: accounts, presence, messages, receipts, history, attachments.

Presence (connect, disconnect, the couriers, the cluster's events) is its base class, `Online`
(`online.py`); the store work that follows pushes and acks is the `Settler` (`settling.py`).

Raises domain errors (`dmds.errors`) and knows nothing of wire formats. Presence lives in memory
(after a restart everyone starts disconnected); everything else lives in the store. With several
nodes on one store (a `Cluster`), presence is the cluster's, mirrored here, and each online user
has exactly one node whose courier pushes to them; the others learn of new items by notification.

Classic and session users share one directory. A user with a password (registered through the
session protocol) is "protected": the classic protocol, which has no authentication, may not
CONNECT, DISCONNECT, SEND or UNREGISTER as them (`Forbidden`); classic users can still message them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dmds.core.accounts import Accounts
from dmds.core.delivery import Courier
from dmds.core.model import AttachmentInfo, ItemKind, OutboxItem, SendCall, StoredMessage, User
from dmds.core.online import Online
from dmds.core.ports import Cluster, Endpoint, Store
from dmds.core.presence import Directory
from dmds.core.ratelimit import TokenBucket
from dmds.core.settling import Settler
from dmds.core.validation import check_registration, check_text
from dmds.errors import (
    DmdsError,
    Forbidden,
    InvalidField,
    LimitExceeded,
    NotConnected,
    RateLimited,
    UnknownAttachment,
    UnknownUser,
)
from dmds.settings import AccountSettings, DeliverySettings

if TYPE_CHECKING:
    from dmds.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S")


class Service(Online):
    """Users, presence and delivery. One instance per server process (a node)."""

    def __init__(
        self,
        store: Store,
        delivery: DeliverySettings,
        accounts: AccountSettings | None = None,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        #: counts for the admin port (None: off); added to per batch where there is one
        self.metrics = metrics
        self._settings = delivery
        self._clock = clock
        self.accounts = Accounts(store, accounts or AccountSettings())
        self._cluster = cluster
        self.node_id = cluster.node_id if cluster is not None else ""
        # The presence half's state (`Online` says what each is).
        self._couriers: dict[str, Courier] = {}
        self._connecting: Counter[str] = Counter()
        self._directory = Directory()
        self.classic_endpoint: Callable[[str], Endpoint] | None = None
        self._buckets: dict[str, TokenBucket] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._settler = Settler(
            store,
            clock=clock,
            courier_of=self._couriers.get,
            spawn=self._spawn,
            closing=self._closing,
            metrics=metrics,
        )

    # -- accounts -----------------------------------------------------------------------------------

    async def register(
        self,
        full_name: str,
        alias: str,
        birth_date: str,
        password: str | None = None,
        address: str = "",
    ) -> None:
        check_registration(full_name, alias, birth_date)
        password_hash = None
        if password is not None:
            self.accounts.check_password(password)
            # Each costs an argon2 hash: limited per address like wrong passwords.
            try:
                self.accounts.registering(address, self._clock())
            except RateLimited:
                if self.metrics is not None:
                    self.metrics.rate_limited["register"] += 1
                raise
            password_hash = await self.accounts.hash(password)
        await self._store.register(
            User(alias=alias, full_name=full_name, birth_date=birth_date), password_hash
        )
        log.debug("registered %s%s", alias, " (with a password)" if password is not None else "")

    def register_nowait(self, full_name: str, alias: str, birth_date: str) -> Awaitable[None]:
        """`register` without a password (the classic protocol) and without a task: checks now,
        raising the same domain errors; the store's awaitable completes once the user is committed."""
        check_registration(full_name, alias, birth_date)
        return self._store.register(User(alias=alias, full_name=full_name, birth_date=birth_date))

    async def unregister(self, alias: str, *, classic: bool = False) -> None:
        if classic:
            await self._guarded(alias, classic)
        await self._store.unregister(alias)
        await self._drop(alias)
        log.debug("unregistered %s", alias)

    async def login(self, alias: str, password: str, address: str) -> tuple[str, float]:
        """Check the password; returns a session token and when it expires."""
        now = self._clock()
        try:
            await self.accounts.authenticate(alias, password, address, now)
        except DmdsError as exc:
            self._login_failed("password", exc)
            raise
        if self.metrics is not None:
            self.metrics.logins["password", "ok"] += 1
        return await self.accounts.open_session(alias, now)

    async def resume(self, token: str) -> tuple[str, float]:
        """(alias, expires_at) of a session token; BadToken if it is not valid."""
        try:
            found = await self.accounts.resume(token, self._clock())
        except DmdsError as exc:
            self._login_failed("token", exc)
            raise
        if self.metrics is not None:
            self.metrics.logins["token", "ok"] += 1
        return found

    def _login_failed(self, method: str, exc: DmdsError) -> None:
        if (m := self.metrics) is not None:
            limited = isinstance(exc, RateLimited)
            m.logins[method, "rate_limited" if limited else "failed"] += 1
            if limited:
                m.rate_limited["login"] += 1

    async def logout(self, alias: str, token: str) -> None:
        await self.accounts.close_session(alias, token)

    async def change_password(self, alias: str, old: str, new: str, address: str) -> None:
        await self.accounts.authenticate(alias, old, address, self._clock())
        self.accounts.check_password(new)
        await self._store.set_password(alias, await self.accounts.hash(new))
        # Every token of the user is revoked, this connection's too: other devices log in again,
        # and this one stays logged in until it disconnects.
        await self._store.revoke_sessions(alias)

    async def delete_account(self, alias: str, password: str, address: str) -> None:
        await self.accounts.authenticate(alias, password, address, self._clock())
        await self.unregister(alias)

    @property
    def delivery(self) -> DeliverySettings:
        """The delivery settings in force (the send rate may have changed since the start)."""
        return self._settings

    # -- messages -----------------------------------------------------------------------------------

    async def send(
        self,
        sender: str,
        recipient: str,
        text: str,
        *,
        key: str | None = None,
        attachment: int = 0,
        classic: bool = False,
    ) -> OutboxItem:
        """Store a message and return it once it is committed; delivery follows. A resend with a
        key already used returns the first message and delivers nothing more."""
        try:
            check_text(text, key)
            entry = self._directory.get(sender)
            if entry is None:
                if await self._store.user(sender) is None:
                    raise UnknownUser(sender)
                raise NotConnected(sender)  # classic.md: a user must be connected to send
            if classic and not entry.classic:
                raise Forbidden(f"{sender} has a password: not over the classic protocol")
        except DmdsError as exc:
            self._refused(exc)
            raise
        return await self._store_message(sender, recipient, text, key, attachment)

    def send_many_nowait(
        self, sender: str, sends: list[SendCall]
    ) -> asyncio.Future[list[OutboxItem | DmdsError]]:
        """`send` for messages of a connected session user (recipient, text, key), in order, as one
        store request and without a task: one future for them all, resolved once they are committed
        and offered to their recipients. Each result is the item, or the domain error its own `send`
        would have raised, so that a refused message holds none of the others back."""
        if sender not in self._directory:
            self._refused(exc := NotConnected(sender))
            raise exc
        now = self._clock()
        results: list[OutboxItem | DmdsError | None] = [None] * len(sends)
        calls: list[SendCall] = []
        where: list[int] = []  # the place in `results` of each of `calls`
        for i, call in enumerate(sends):
            try:
                check_text(call[1], call[2])
            except DmdsError as exc:
                self._refused(exc)
                results[i] = exc
                continue
            try:
                self._take_send(sender, now)  # counts its refusal itself
            except DmdsError as exc:
                results[i] = exc
                continue
            calls.append(call)
            where.append(i)
        done: asyncio.Future[list[OutboxItem | DmdsError]] = asyncio.get_running_loop().create_future()
        if not calls:
            done.set_result(cast("list[OutboxItem | DmdsError]", results))
            return done
        settings = self._settings
        stored = asyncio.ensure_future(
            self._store.add_messages(
                sender,
                calls,
                now=now,
                max_stored=settings.max_stored_messages,
                max_stored_bytes=settings.max_stored_bytes,
            )
        )

        def offer(stored_results: list[tuple[OutboxItem, bool] | DmdsError]) -> list[OutboxItem | DmdsError]:
            couriers = self._couriers
            accepted = 0
            for i, result in zip(where, stored_results, strict=True):
                if isinstance(result, DmdsError):
                    self._refused(result)
                    results[i] = result
                    continue
                item, new = result
                if new:
                    accepted += 1
                    if (target := couriers.get(item.owner)) is not None:
                        target.offer(item)
                results[i] = item
            if self.metrics is not None:
                self.metrics.accepted += accepted
            return cast("list[OutboxItem | DmdsError]", results)

        self._when_stored(stored, done, offer)
        return done

    def _when_stored(
        self, stored: asyncio.Future[S], done: asyncio.Future[T], offer: Callable[[S], T]
    ) -> None:
        """Once `stored` (a store's answer) is in: `offer` what it stored to the couriers and resolve
        `done` with what `offer` returns; a store failure fails `done`. The offer is made even if
        `done` was cancelled meanwhile: what is committed is delivered."""

        def chained(fut: asyncio.Future[S]) -> None:
            if fut.cancelled():
                done.cancel()
                return
            if (exc := fut.exception()) is not None:
                self._refused(exc)
                if not done.done():
                    done.set_exception(exc)
                return
            value = offer(fut.result())
            if not done.done():
                done.set_result(value)

        stored.add_done_callback(chained)

    def _take_send(self, sender: str, now: float) -> None:
        """One message's worth of the sender's send rate, or LimitExceeded."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            # Per node: with several nodes a user may send up to this rate through each.
            bucket = self._buckets[sender] = TokenBucket(
                self._settings.max_send_rate, self._settings.send_burst, now
            )
        try:
            bucket.take(now, f"{sender} sends")
        except LimitExceeded as exc:
            if self.metrics is not None:
                self.metrics.rate_limited["send"] += 1
                self._refused(exc)
            raise

    def set_send_rate(self, rate: float, burst: int) -> None:
        """New send-rate limits (a reload): every user's bucket starts again under them."""
        self._settings = dataclasses.replace(self._settings, max_send_rate=rate, send_burst=burst)
        self._buckets.clear()

    def _refused(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.refused[type(exc).__name__] += 1

    def _store_message(
        self, sender: str, recipient: str, text: str, key: str | None, attachment: int
    ) -> asyncio.Future[OutboxItem]:
        """The send rate, then the store; the future resolves once the message is committed and
        offered to its recipient's courier (a resent key offers nothing: it was delivered once)."""
        now = self._clock()
        self._take_send(sender, now)
        # ensure_future: a store's future as it is (no task); a coroutine would get a task.
        stored = asyncio.ensure_future(
            self._store.add_message(
                sender,
                recipient,
                text,
                now=now,
                max_stored=self._settings.max_stored_messages,
                max_stored_bytes=self._settings.max_stored_bytes,
                key=key,
                attachment=attachment,
            )
        )
        done: asyncio.Future[OutboxItem] = asyncio.get_running_loop().create_future()

        def offer(result: tuple[OutboxItem, bool]) -> OutboxItem:
            item, new = result
            if new and self.metrics is not None:
                self.metrics.accepted += 1
            target = self._couriers.get(recipient)
            if new and target is not None:
                target.offer(item)
            return item

        self._when_stored(stored, done, offer)
        return done

    def _pushed(self, courier: Courier, items: list[OutboxItem]) -> None:
        message = ItemKind.MESSAGE
        if not courier.endpoint.confirms:  # classic: written is delivered
            delivered = [item.message_id for item in items if item.kind is message]
            if delivered:
                self.settle_soon(items[0].owner, delivered, ItemKind.DELIVERED)
        if receipts := [item for item in items if item.kind is not message]:
            self._settler.forget_soon(receipts)

    def settle_soon(self, owner: str, message_ids: list[int], kind: ItemKind = ItemKind.DELIVERED) -> None:
        """Mark messages delivered (or read) in the next batch: what a client's Ack or MarkRead does."""
        self._settler.settle_soon(owner, message_ids, kind)

    async def acknowledge(self, alias: str, message_ids: list[int]) -> None:
        """The client of `alias` confirms these messages arrived: they are delivered now."""
        await self._settler.settle(alias, message_ids, ItemKind.DELIVERED)

    async def mark_read(self, alias: str, message_ids: list[int]) -> None:
        await self._settler.settle(alias, message_ids, ItemKind.READ)

    # -- history and attachments --------------------------------------------------------------------

    async def history(
        self, alias: str, peer: str, before: float, limit: int, max_bytes: int = 1 << 20
    ) -> list[StoredMessage]:
        return await self._store.history(alias, peer, before, limit, max_bytes)

    async def purge(self) -> int:
        """Forget delivered messages older than the retention period."""
        return await self._store.purge(self._clock() - self._settings.retention_days * 86400)

    async def start_upload(self, owner: str, name: str, media_type: str, size: int) -> int:
        if size > self._settings.max_attachment_bytes:
            raise LimitExceeded(f"attachment of {size} bytes (max {self._settings.max_attachment_bytes})")
        if not name.strip():
            raise InvalidField("attachment name is empty")
        return await self._store.start_upload(owner, name, media_type, size, self._clock())

    async def append_upload(self, owner: str, upload: int, offset: int, data: bytes) -> tuple[int, int]:
        """Returns (length so far, attachment id once complete else 0)."""
        length = await self._store.append_upload(owner, upload, offset, data)
        info = await self._store.attachment(upload)
        return length, (info.attachment_id if info is not None else 0)

    async def attachment(self, attachment_id: int) -> AttachmentInfo:
        info = await self._store.attachment(attachment_id)
        if info is None:
            raise UnknownAttachment(f"attachment {attachment_id}")
        return info

    async def read_attachment(self, reader: str, attachment_id: int, offset: int, length: int) -> bytes:
        return await self._store.read_attachment(reader, attachment_id, offset, length)

    async def close(self) -> None:
        self._closing.set()
        couriers = list(self._couriers.values())
        self._couriers.clear()  # the same dict: the settler looks couriers up in it
        for courier in couriers:
            await courier.stop()
        if self._cluster is not None:
            await self._cluster.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
