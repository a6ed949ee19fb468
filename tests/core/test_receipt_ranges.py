"""A courier pushes each message of a receipt range once per connection, however the range reaches
it: offered as it grows, then read back whole from the store before the push was recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dmds.core.delivery import Courier
from dmds.core.model import OutboxItem, User
from dmds.errors import DeliveryFailed, DmdsError
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore


class Pushes:
    confirms = True

    def __init__(self, batches: bool) -> None:
        self.ids: list[int] = []
        self.batches = batches

    async def deliver(self, item: OutboxItem) -> None:
        self.deliver_batch([item])

    def deliver_batch(self, items: list[OutboxItem]) -> None:
        for item in items:
            self.ids += [message_id for message_id, _ in item.receipts]

    def describe(self) -> str:
        return "pushes"

    def replaced(self) -> None:
        pass

    def typing(self, sender: str) -> None:
        pass

    def kicked(self, reason: DmdsError) -> None:
        pass


@pytest.mark.parametrize("batches", [False, True], ids=["one-by-one", "batches"])
async def test_a_range_read_back_after_an_offer_is_trimmed_to_what_is_new(
    tmp_path: Path, batches: bool
) -> None:
    store = await SqliteStore.open(tmp_path, StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(1, 6):
        await store.add_message("ana", "bob", f"m{n}", now=1.0, max_stored=10, max_stored_bytes=10_000)
    pushes = Pushes(batches)
    failures: list[DeliveryFailed] = []
    courier = Courier(
        "ana",
        pushes,
        store,
        max_pending=10,
        on_pushed=lambda c, items: None,
        on_failed=lambda c, e: failures.append(e),
    )
    courier.start()
    await asyncio.sleep(0.05)  # the first page: nothing waits for ana
    [first] = await store.mark_delivered("bob", [1, 2, 3], now=2.0)
    courier.offer(first)
    await asyncio.sleep(0.05)
    assert pushes.ids == [1, 2, 3]
    # The push was never recorded (forget), and the range grows: the store now holds 1..5 under a
    # newer seq. Read back (another node's word, say), only 4 and 5 are new on this connection.
    await store.mark_delivered("bob", [4, 5], now=3.0)
    [whole] = await store.pending("ana", 0, 10)
    assert [m for m, _ in whole.receipts] == [1, 2, 3, 4, 5]
    courier.poke()
    await asyncio.sleep(0.05)
    assert pushes.ids == [1, 2, 3, 4, 5]
    assert failures == []
    await courier.stop()
    await store.close()
