"""Delivery to one connected user: a courier per connected recipient.

Theory of operation
-------------------
The store is the truth; memory is only a shortcut. Every item (message or receipt) is committed to
the store's outbox before anyone is told about it, and is removed only after its push was written.

Each connected user has one `Courier`, an asyncio task that pushes that user's items in `seq`
order, so pushes to one recipient are ordered while couriers of different recipients run
concurrently and a slow listener delays only its own user. Pushes to a classic listener are awaited
one at a time; an endpoint that only queues frames (`Endpoint.batches`) gets every waiting item in
one call.

A courier learns of items three ways:
- `offer(item)`: the service hands it each item committed by this process while the user is
  connected, so the hot path needs no store read;
- `poke()`: another node (sharing the store) committed items for the user: read them in pages;
- pages read from the store (`pending(after_seq=loaded_to)`): the items stored while the user was
  offline, and whatever was not queued in memory (`max_pending` bounds memory, not what is kept).

`loaded_to` is the highest seq the queue reflects (every item of the user up to it was queued or
pushed); `more` says the store may hold items above it that are not queued. While `more` is set,
offers are not queued (they would overtake the stored items below them): they are read back in
order with the next page. An offer made while a page is being read may be missing from that page
(read before the item's commit), so it keeps `more` set for one more page. An offered item also
names the user's item stored before it (`after`, from a store that other nodes write too); if that
is above `loaded_to`, another node's item lies between, whose wake-up is late or lost: the offer
is read back with a page too. The next page is read while the current one is still being pushed
(when the queue is half empty), so a long offline queue drains without waiting for the store
between pages.

`cursor`, the seq of the last item pushed, makes each item pushed at most once per connection. A
receipt range (`OutboxItem.ids`) is kept under one seq that moves up as the range grows, so a page
may hold a range an offer already pushed in part: `receipted`, the highest id pushed per peer,
trims it to what is new.
A push that fails ends the courier; the service then treats the user as disconnected. What was not
pushed is still stored, and is delivered on the next CONNECT. A read of the store that fails with
StoreError (PostgreSQL restarting) is retried with backoff: the user is still connected.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import logging
import operator
from collections.abc import Callable

from dmds.core.model import OutboxItem
from dmds.core.ports import Endpoint, Store
from dmds.errors import DeliveryFailed, StoreError

log = logging.getLogger(__name__)

#: Pushed items dropped from the front of a courier's list once this many have gone.
COMPACT_AT = 256
#: seconds between reads of the outbox while the store fails: first, and at most
RETRY_S = (0.05, 2.0)
_IDS = operator.attrgetter("ids")


class Courier:
    """Pushes one connected user's outbox to their endpoint, in order."""

    __slots__ = (
        "_batches", "_cursor", "_failed", "_head", "_loaded_to", "_loading", "_max_pending", "_missed",
        "_more", "_on_failed", "_on_pushed", "_queue", "_receipted", "_store", "_task", "alias", "classic",
        "endpoint",
    )  # fmt: skip

    def __init__(
        self,
        alias: str,
        endpoint: Endpoint,
        store: Store,
        *,
        max_pending: int,
        on_pushed: Callable[[Courier, list[OutboxItem]], None],
        on_failed: Callable[[Courier, DeliveryFailed], None],
        classic: bool = False,
    ) -> None:
        self.alias = alias
        #: connected by the classic protocol: its presence is its listener's address, which a second
        #: CONNECT may not take over (a session login replaces the connection before it)
        self.classic = classic
        self.endpoint = endpoint
        self._batches = endpoint.batches
        self._store = store
        self._max_pending = max_pending
        self._on_pushed = on_pushed
        self._on_failed = on_failed
        # A list and a head index rather than a deque, and a task only while there is work: most
        # connected users are idle, and an idle courier should cost little more than its object.
        self._queue: list[OutboxItem] = []
        self._head = 0
        self._cursor = 0
        self._receipted: dict[str, int] | None = None  # made at the first range: most users idle
        self._loaded_to = 0
        self._more = True  # nothing read yet: the store may hold items stored while offline
        self._missed = False
        self._failed = False
        self._loading: asyncio.Future[list[OutboxItem]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._kick()

    async def stop(self) -> None:
        self._failed = True  # no new task
        if self._loading is not None:
            self._loading.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _kick(self) -> None:
        if self._task is None and not self._failed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"courier:{self.alias}")

    def _waiting(self) -> int:
        return len(self._queue) - self._head

    def backlog(self) -> int:
        """Items queued here, not pushed yet (what is only in the store is not counted)."""
        return self._waiting()

    def offer(self, item: OutboxItem) -> None:
        if item.seq <= self._cursor:
            return  # pushed already
        if item.seq <= self._loaded_to:
            # Read with a page already, or an offer overtaken by a later one (offers come in commit
            # order, which is seq order, but nothing here relies on it).
            if all(i.seq != item.seq for i in self._queue[self._head :]):
                bisect.insort(self._queue, item, lo=self._head, key=lambda i: i.seq)
                self._kick()
            return
        if self._more or self._loading is not None:
            self._missed = True  # in the store: read back in order with a page
        elif item.after > self._loaded_to:
            # Another node stored an item of this user's just before it, not read yet (its wake-up
            # is late or lost): queueing this one would skip that one. Read both in order.
            self._more = True
            self._kick()
        elif self._waiting() >= self._max_pending:
            self._more = True  # safe in the store: read back when the queue has room
            self._kick()
        else:
            self._queue.append(item)
            self._loaded_to = item.seq
            self._kick()

    def poke(self) -> None:
        """Another node stored items for this user: read the store for them (they are not offered)."""
        if self._failed:
            return
        if self._loading is not None:
            self._missed = True  # the page being read may predate them
        else:
            self._more = True
        self._kick()

    async def _run(self) -> None:
        try:
            await self._work()
        finally:
            self._task = None

    async def _work(self) -> None:
        half = max(1, self._max_pending // 2)
        retry_s = RETRY_S[0]
        while True:
            if self._more and self._loading is None and self._waiting() <= half:
                # After the first page, what is committed later is offered (or missed and read
                # again), and the acks before this read concern the pages pushed: it may go ahead.
                self._loading = asyncio.ensure_future(
                    self._store.pending(
                        self.alias, self._loaded_to, self._max_pending, ahead=self._loaded_to > 0
                    )
                )
                self._missed = False
            if self._head == len(self._queue):
                self._queue.clear()
                self._head = 0
                if self._loading is None:
                    return  # idle: the next offer starts a new task
                with contextlib.suppress(Exception):
                    # The page itself awaited, not through asyncio.wait: a loop pass sooner. What
                    # it raised is looked at below.
                    await self._loading
            if self._loading is not None and self._loading.done():
                try:
                    self._page(self._loading.result())
                    retry_s = RETRY_S[0]
                except StoreError as exc:
                    # The store is failing for now (PostgreSQL restarting): read the page again.
                    log.warning(
                        "reading the outbox of %s failed (%s); retrying in %.2f s", self.alias, exc, retry_s
                    )
                    self._loading = None
                    self._more = True
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, RETRY_S[1])
                    continue
                except Exception as exc:
                    # Nobody would deliver to a user still shown connected: end it like a failed push.
                    log.exception("reading the outbox of %s failed", self.alias)
                    self._fail(DeliveryFailed(str(exc)))
                    return
                continue
            if self._head == len(self._queue):
                continue
            if self._batches:
                if not self._push_waiting():
                    return
                continue
            item = self._queue[self._head]
            self._head += 1
            if self._head >= COMPACT_AT and self._head * 2 >= len(self._queue):
                del self._queue[: self._head]  # under steady traffic the list may never empty
                self._head = 0
            if item.seq <= self._cursor:
                continue
            if item.ids:
                trimmed = self._unreceipted(item)
                if trimmed is None:
                    continue
                item = trimmed
            try:
                await self.endpoint.deliver(item)
            except DeliveryFailed as exc:
                self._fail(exc)
                return
            except Exception as exc:
                # A bug must not leave the user "connected" with nobody delivering: treat it as a
                # failed push (the item stays stored) and say so loudly.
                log.exception("pushing item %d to %s failed", item.seq, self.alias)
                self._fail(DeliveryFailed(str(exc)))
                return
            self._cursor = item.seq
            if item.ids:
                if self._receipted is None:
                    self._receipted = {}
                self._receipted[item.peer] = item.ids[-1][0]
            self._on_pushed(self, [item])

    def _push_waiting(self) -> bool:
        """Hand every waiting item to an endpoint that takes them at once (`Endpoint.batches`): a
        drain's page becomes one call and one write instead of one per item. False if it failed."""
        queue, head = self._queue, self._head
        if queue[head].seq > self._cursor and not any(map(_IDS, itertools.islice(queue, head, None))):
            # A drain's page (no receipt ranges, nothing pushed yet: the queue is in seq order)
            # handed over as it is, without a look at each item.
            run = queue[head:] if head else queue
            self._queue = []
            self._head = 0
            return self._hand_over(run, run[-1].seq)
        run = []
        cursor = self._cursor
        for waiting in queue[head:]:
            if waiting.seq <= cursor:
                continue
            if waiting.ids:
                trimmed = self._unreceipted(waiting)
                if trimmed is None:
                    continue
                if self._receipted is None:
                    self._receipted = {}
                self._receipted[trimmed.peer] = trimmed.ids[-1][0]
                run.append(trimmed)
            else:
                run.append(waiting)
            cursor = waiting.seq
        self._queue.clear()
        self._head = 0
        return self._hand_over(run, cursor) if run else True

    def _hand_over(self, run: list[OutboxItem], cursor: int) -> bool:
        try:
            self.endpoint.deliver_batch(run)
        except DeliveryFailed as exc:
            self._fail(exc)
            return False
        except Exception as exc:
            log.exception("pushing %d items to %s failed", len(run), self.alias)
            self._fail(DeliveryFailed(str(exc)))
            return False
        self._cursor = cursor
        self._on_pushed(self, run)  # one call per page, not per item
        return True

    def _unreceipted(self, item: OutboxItem) -> OutboxItem | None:
        """What of a receipt range was not pushed on this connection yet (None: nothing)."""
        done = self._receipted.get(item.peer, 0) if self._receipted is not None else 0
        if item.ids[0][0] > done:
            return item
        ids = tuple(entry for entry in item.ids if entry[0] > done)
        return dataclasses.replace(item, ids=ids) if ids else None

    def _fail(self, exc: DeliveryFailed) -> None:
        self._failed = True
        self._on_failed(self, exc)

    def _page(self, items: list[OutboxItem]) -> None:
        self._loading = None
        if self._head:
            del self._queue[: self._head]
            self._head = 0
        if items and items[0].seq > self._loaded_to:
            self._queue.extend(items)  # in seq order: all of it is new
        else:
            self._queue.extend(i for i in items if i.seq > self._loaded_to)
        if items:
            self._loaded_to = max(self._loaded_to, items[-1].seq)
        # A full page: there may be more behind it. An offer during the read: it may be missing.
        self._more = len(items) == self._max_pending or self._missed
        self._missed = False
