"""What follows a push or an ack in the store: deliveries and reads recorded, pushed receipts forgotten.

Gathered over one loop pass and done in one store call per (owner, kind): under load, thousands of
acks cost a few store jobs, not one task each. A store that fails (PostgreSQL restarting) is tried
again with backoff until the service closes: a push that happened must be recorded, or the sender's
receipt would wait for the recipient's next connect; given up, the message is pushed again (a
duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dmds.core.delivery import RETRY_S, Courier
from dmds.core.model import ItemKind, OutboxItem
from dmds.core.ports import Store
from dmds.errors import StoreError

if TYPE_CHECKING:
    from dmds.metrics import Metrics

log = logging.getLogger("dmds.core.service")
T = TypeVar("T")


@dataclass(eq=False)
class Settler:
    """Records deliveries, reads and pushed receipts for the `Service`, batched per loop pass."""

    store: Store
    clock: Callable[[], float]
    #: the courier of a user on this node, if any (receipts are offered only to those)
    courier_of: Callable[[str], Courier | None]
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    #: set when the service closes: the retries stop
    closing: asyncio.Event
    metrics: Metrics | None
    _forget: list[OutboxItem] = field(default_factory=list, init=False)
    _settling: dict[tuple[str, ItemKind], list[int]] = field(default_factory=dict, init=False)
    _flush_scheduled: bool = field(default=False, init=False)

    def forget_soon(self, receipts: list[OutboxItem]) -> None:
        """Receipts were pushed: they leave the store in the next batch (lazily)."""
        self._forget.extend(receipts)
        self._schedule_flush()

    def settle_soon(self, owner: str, message_ids: list[int], kind: ItemKind) -> None:
        """Mark messages delivered (or read) in the next batch: what a client's Ack or MarkRead does."""
        self._settling.setdefault((owner, kind), []).extend(message_ids)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._forget:
            pushed, self._forget = self._forget, []
            forget = self.store.forget
            self.spawn(self.until_stored("forgetting pushed receipts", lambda: forget(pushed)))
        settling, self._settling = self._settling, {}
        for (owner, kind), ids in settling.items():
            self.spawn(self.settle(owner, ids, kind))

    async def until_stored(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` again, with backoff, while the store fails; given up when the service closes."""
        delay, warned = RETRY_S[0], False
        while True:
            try:
                return await attempt()
            except StoreError as exc:
                if self.closing.is_set():
                    raise
                if not warned:
                    log.warning("%s: the store failed (%s); retrying", what, exc)
                    warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), delay)
            delay = min(delay * 2, RETRY_S[1])

    async def settle(self, owner: str, message_ids: list[int], kind: ItemKind) -> None:
        """Record now that `owner` received (or read) these messages, and offer the receipts."""
        now = self.clock()
        courier_of = self.courier_of

        def here(alias: str) -> bool:
            return courier_of(alias) is not None

        async def attempt() -> list[OutboxItem]:
            # Read implies delivered: a client that marks read without acking still gives its
            # sender both receipts (mark_delivered skips what is delivered already).
            # A receipt is offered only to a courier of this node: the others read it back.
            receipts = await self.store.mark_delivered(owner, message_ids, now, here)
            if kind is ItemKind.READ:
                receipts += await self.store.mark_read(owner, message_ids, now)
            return receipts

        try:
            receipts = await self.until_stored(f"recording {kind.name} for {owner}", attempt)
        except Exception:
            # The messages stay stored and are pushed again on the next connect: a duplicate,
            # never a loss.
            log.exception("could not record %s of %d message(s) of %s", kind.name, len(message_ids), owner)
            return
        if (m := self.metrics) is not None:
            if kind is ItemKind.READ:
                m.read += len(message_ids)
            else:
                m.delivered += len(message_ids)
        for receipt in receipts:
            courier = courier_of(receipt.owner)
            if courier is not None:
                courier.offer(receipt)
