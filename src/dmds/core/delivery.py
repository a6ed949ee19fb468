"""Delivery to one connected user: a courier per connected recipient.

Theory of operation
-------------------
The store is the truth; memory is only a shortcut. Every item (message or receipt) is committed to
the store's outbox before anyone is told about it, and is removed only after its push was written.

Each connected user has one `Courier`, an asyncio task that pushes that user's items one at a time,
in `seq` order, so pushes to one recipient are ordered while couriers of different recipients run
concurrently and a slow listener delays only its own user.

A courier learns of items two ways:
- `offer(item)`: the service hands it each item committed while the user is connected, so the hot
  path needs no store read;
- a reload from the store (`pending(after_seq=cursor)`): when the courier starts (items stored while
  the user was offline), and after its in-memory queue overflowed (`max_pending` is a bound on memory,
  not on what is kept: the overflow stays in the store and is read back later).

The two can overlap (an item committed just before a reload is read and offered too); `cursor`, the
seq of the last item pushed, and merging by seq make each item pushed once and in order. All store
calls go through one ordered queue, and the service registers the courier before it starts its first
reload, so no item committed after that reload can be missed: it is offered.

A push that fails ends the courier; the service then treats the user as disconnected. What was not
pushed is still stored, and is delivered on the next CONNECT.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from dmds.core.model import OutboxItem
from dmds.core.ports import Endpoint, Store
from dmds.errors import DeliveryFailed

log = logging.getLogger(__name__)


class Courier:
    """Pushes one connected user's outbox to their endpoint, in order."""

    def __init__(
        self,
        alias: str,
        endpoint: Endpoint,
        store: Store,
        *,
        max_pending: int,
        on_pushed: Callable[[Courier, OutboxItem], None],
        on_failed: Callable[[Courier, DeliveryFailed], None],
    ) -> None:
        self.alias = alias
        self.endpoint = endpoint
        self._store = store
        self._max_pending = max_pending
        self._on_pushed = on_pushed
        self._on_failed = on_failed
        self._queue: deque[OutboxItem] = deque()
        self._cursor = 0
        self._reload = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"courier:{self.alias}")

    async def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def offer(self, item: OutboxItem) -> None:
        if item.seq <= self._cursor:
            return
        if len(self._queue) >= self._max_pending:
            # The items are safe in the store: drop the copies and read them back when caught up.
            self._queue.clear()
            self._reload = True
        else:
            self._queue.append(item)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._reload:
                    await self._load()
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue.popleft()
            if item.seq <= self._cursor:
                continue
            try:
                await self.endpoint.deliver(item)
            except DeliveryFailed as exc:
                self._on_failed(self, exc)
                return
            except Exception as exc:
                # A bug must not leave the user "connected" with nobody delivering: treat it as a
                # failed push (the item stays stored) and say so loudly.
                log.exception("pushing item %d to %s failed", item.seq, self.alias)
                self._on_failed(self, DeliveryFailed(str(exc)))
                return
            self._cursor = item.seq
            self._on_pushed(self, item)

    async def _load(self) -> None:
        self._reload = False
        items = await self._store.pending(self.alias, self._cursor, self._max_pending)
        if len(items) == self._max_pending:
            self._reload = True  # there may be more behind these
        merged = {i.seq: i for i in items}
        merged.update((i.seq, i) for i in self._queue)
        self._queue = deque(merged[seq] for seq in sorted(merged) if seq > self._cursor)
