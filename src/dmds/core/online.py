"""Presence and the couriers: who is online where, and which node pushes to whom.

Part of `Service` (its base class; `service.py` has the rest: accounts, messages, history). Presence
lives in memory: with one node this directory is the truth; with several nodes on one store (a
`Cluster`) it mirrors the cluster's table, and each online user has exactly one node whose courier
pushes to them, while the others learn of new items by notification (`cluster_*`).

Classic users are exclusive (a second CONNECT is refused, on any node; their presence is their
listener's address); a session login takes over the user's earlier session connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any

from dmds.core.delivery import Courier
from dmds.core.model import OutboxItem, Presence
from dmds.core.ports import Cluster, Endpoint, PresenceWatcher, Store
from dmds.core.presence import Directory
from dmds.core.ratelimit import TokenBucket
from dmds.errors import (
    AlreadyConnected,
    Blocked,
    DeliveryFailed,
    DmdsError,
    Forbidden,
    NotConnected,
    UnknownUser,
)
from dmds.settings import DeliverySettings

if TYPE_CHECKING:
    from dmds.metrics import Metrics

log = logging.getLogger("dmds.core.service")


class Online:
    """The presence half of `Service`: connect, disconnect, kick, the couriers, the cluster's events."""

    # Set up by Service.__init__.
    _store: Store
    _settings: DeliverySettings
    _cluster: Cluster | None
    node_id: str
    metrics: Metrics | None
    #: the users this node pushes to
    _couriers: dict[str, Courier]
    #: users with a `connect` in flight here: a disconnect meanwhile must not release their entry
    _connecting: Counter[str]
    #: every online user, on every node
    _directory: Directory
    #: builds a classic user's endpoint from its listener's host:port (set by the classic front-end),
    #: for classic users taken over from a dead node
    classic_endpoint: Callable[[str], Endpoint] | None
    _buckets: dict[str, TokenBucket]
    _background: set[asyncio.Task[Any]]

    def _pushed(self, courier: Courier, items: list[OutboxItem]) -> None:
        """A courier wrote `items`: what that settles is the messages' side (`Service`)."""
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _guarded(self, alias: str, classic: bool) -> None:
        """Raise UnknownUser, or Forbidden for a protected alias acted for over classic."""
        record = await self._store.user(alias)
        if record is None:
            raise UnknownUser(alias)
        if record.blocked:
            raise Blocked(f"{alias} is blocked")
        if classic and record.protected:
            raise Forbidden(f"{alias} has a password: not over the classic protocol")

    async def start(self) -> None:
        """Join the cluster, if any: from here on the other nodes' users and items are seen."""
        if self._cluster is not None:
            await self._cluster.start(self)

    async def connect(self, alias: str, endpoint: Endpoint, *, classic: bool = False) -> None:
        """Go online at `endpoint`. Classic: AlreadyConnected if online (on any node). Session
        (already authenticated): takes over from an earlier session connection of the same user,
        on whichever node it is."""
        self._connecting[alias] += 1
        try:
            await self._connect(alias, endpoint, classic)
        finally:
            self._connecting[alias] -= 1
            if not self._connecting[alias]:
                del self._connecting[alias]
        where = endpoint.describe()
        log.info("connected %s at %s", alias, where, extra={"alias": alias, "endpoint": where})

    async def _connect(self, alias: str, endpoint: Endpoint, classic: bool) -> None:
        current = self._couriers.get(alias)
        if current is not None and (classic or current.classic):
            raise AlreadyConnected(alias)
        if classic and alias in self._directory:
            raise AlreadyConnected(alias)
        await self._guarded(alias, classic)
        try:
            if self._cluster is not None:
                address = endpoint.describe() if classic else ""
                await self._cluster.claim(alias, classic, address)
            current = self._couriers.get(alias)  # the store was awaited: look again
            if current is not None:
                if classic or current.classic:
                    raise AlreadyConnected(alias)
                await current.stop()
                current.endpoint.replaced()
            self._serve(alias, endpoint, classic)
        except BaseException:
            if self._cluster is not None and alias not in self._couriers and self._connecting[alias] == 1:
                # Claimed (or left to us by a disconnect meanwhile), and no one is online here.
                self._spawn(self._release(alias))
            raise

    def _serve(self, alias: str, endpoint: Endpoint, classic: bool) -> None:
        """Start pushing to `alias` from this node."""
        courier = Courier(
            alias,
            endpoint,
            self._store,
            max_pending=self._settings.max_pending_pushes,
            on_pushed=self._pushed,
            on_failed=self._push_failed,
            classic=classic,
        )
        self._couriers[alias] = courier
        address = endpoint.describe() if classic else ""
        self._directory.set(Presence(alias, self.node_id, classic, address))
        courier.start()

    async def disconnect(
        self, alias: str, *, classic: bool = False, endpoint: Endpoint | None = None
    ) -> None:
        """Go offline. With `endpoint`, only if that endpoint is still the user's (a replaced
        session connection closing must not disconnect its successor)."""
        courier = self._couriers.get(alias)
        if courier is None or (endpoint is not None and courier.endpoint is not endpoint):
            if endpoint is not None:
                return
            await self._guarded(alias, classic)
            if self._cluster is None or alias not in self._directory:
                raise NotConnected(alias)
            # Online through another node (a classic client's requests may reach any node): that
            # node hears of it and stops pushing.
            if not await self._cluster.release(alias):
                raise NotConnected(alias)
            self._directory.remove(alias)
            self._buckets.pop(alias, None)
            log.info("disconnected %s (served by another node)", alias, extra={"alias": alias})
            return
        if classic:
            await self._guarded(alias, classic)
        await self._drop(alias)
        log.info("disconnected %s", alias, extra={"alias": alias})

    async def _drop(self, alias: str) -> None:
        courier = self._couriers.pop(alias, None)
        self._buckets.pop(alias, None)
        if courier is None:
            return
        # Before any await: a new connection of the user may come online meanwhile, and its entry
        # must stay.
        self._directory.remove(alias)
        await courier.stop()
        if self._cluster is not None and alias not in self._couriers and not self._connecting[alias]:
            await self._release(alias)

    async def _release(self, alias: str) -> None:
        assert self._cluster is not None
        try:
            await self._cluster.release(alias, self.node_id)
        except DmdsError as exc:
            # The entry stays until this node's lease ends or the user comes back: never a loss.
            log.warning("could not record %s offline in the cluster: %s", alias, exc)

    async def connected_users(self, alias: str) -> list[str]:
        if alias not in self._directory:
            if await self._store.user(alias) is None:
                raise UnknownUser(alias)
            raise NotConnected(alias)
        return self._directory.aliases()

    def online(self) -> int:
        """Users online now (on every node)."""
        return len(self._directory.aliases())

    def drain_backlog(self) -> int:
        """Items queued in this node's couriers' memory, waiting to be pushed."""
        return sum(courier.backlog() for courier in self._couriers.values())

    def is_connected(self, alias: str) -> bool:
        return alias in self._directory

    def presence(self, alias: str) -> Presence | None:
        """Where `alias` is online (the node that serves them), or None."""
        return self._directory.get(alias)

    async def kick(self, alias: str, reason: DmdsError) -> Presence | None:
        """The operator takes `alias` offline wherever they are; returns where they were (None: not
        online). Served here: their endpoint is told (`reason`) and closes. Served by another node
        (several nodes on one store): their presence is released, and that node, hearing of it,
        stops serving them as when they log in elsewhere (a session connection there is closed as
        "logged in again elsewhere": the cluster carries no reason)."""
        entry = self._directory.get(alias)
        courier = self._couriers.get(alias)
        if courier is not None:
            await self._drop(alias)
            courier.endpoint.kicked(reason)
        elif entry is not None and self._cluster is not None:
            await self._cluster.release(alias)
            self._directory.remove(alias)
            self._buckets.pop(alias, None)
        return entry

    def typing(self, sender: str, to: str) -> None:
        """Tell `to` that `sender` is typing, if `to` is connected to this node. Ephemeral: nothing
        is stored, and a user on another node is not told (a NOTIFY per keystroke would cost every
        node's commits the database-wide lock NOTIFY takes)."""
        courier = self._couriers.get(to)
        if courier is not None and sender != to:
            courier.endpoint.typing(sender)

    def subscribe(self, watcher: PresenceWatcher) -> list[str]:
        """Watch presence: returns who is online now; then watcher.presence_changed(...) per change."""
        return self._directory.subscribe(watcher)

    def unsubscribe(self, watcher: PresenceWatcher) -> None:
        self._directory.unsubscribe(watcher)

    def _push_failed(self, courier: Courier, exc: DeliveryFailed) -> None:
        # classic.md: an undeliverable push leaves the item stored and the recipient disconnected.
        if self.metrics is not None:
            self.metrics.pushes_failed += 1
        if self._couriers.get(courier.alias) is courier:
            del self._couriers[courier.alias]
            self._buckets.pop(courier.alias, None)
            self._directory.remove(courier.alias)
            if self._cluster is not None:
                self._spawn(self._release(courier.alias))
        log.info(
            "push to %s at %s failed (%s); now disconnected", courier.alias, courier.endpoint.describe(), exc
        )

    # -- the other nodes (ClusterEvents) ------------------------------------------------------------

    def cluster_woken(self, owners: Collection[str] | None) -> None:
        if owners is None:
            for courier in self._couriers.values():
                courier.poke()
            return
        for owner in owners:
            if (target := self._couriers.get(owner)) is not None:
                target.poke()

    def cluster_presence(self, changes: list[tuple[str, Presence | None]]) -> None:
        for alias, entry in changes:
            if entry is None:
                self._directory.remove(alias)
                self._buckets.pop(alias, None)
                self._unserve(alias)  # e.g. a DISCONNECT of our classic user through another node
            else:
                self._place(entry)

    def cluster_resync(self, entries: list[Presence]) -> None:
        table = {entry.alias: entry for entry in entries}
        for alias in [a for a in self._directory if a not in table]:
            courier = self._couriers.get(alias)
            if courier is not None and not courier.classic and self._cluster is not None:
                # A session user still connected here, whose entry went (this node was thought dead):
                # claim it again rather than cut them off.
                self._spawn(self._cluster.claim(alias, False, ""))
                continue
            self.cluster_presence([(alias, None)])
        for entry in entries:
            self._place(entry)

    def cluster_lost(self) -> None:
        # Another node may take our classic users over: exactly one node pushes to each, so stop.
        # Their entries (and couriers, if they are still ours) come back with the next resync.
        for alias, courier in list(self._couriers.items()):
            if courier.classic:
                self._unserve(alias)
        log.warning("lease lost: stopped pushing to classic users until it is renewed")

    def _place(self, entry: Presence) -> None:
        """An entry of the cluster: who serves the user now."""
        self._directory.set(entry)
        if entry.node != self.node_id:
            if self._unserve(entry.alias):
                log.info("%s is now served by node %s", entry.alias, entry.node)
        elif entry.classic and entry.alias not in self._couriers and self.classic_endpoint is not None:
            # A classic user of a dead node, now ours: their listener is where it was.
            self._serve(entry.alias, self.classic_endpoint(entry.address), classic=True)
            log.info("took over classic user %s at %s", entry.alias, entry.address)

    def _unserve(self, alias: str) -> bool:
        """Stop pushing to `alias` from this node (another node serves them, or nobody)."""
        courier = self._couriers.pop(alias, None)
        if courier is None:
            return False
        self._spawn(courier.stop())
        courier.endpoint.replaced()
        return True
