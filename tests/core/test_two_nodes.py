"""Two nodes' stores on one real PostgreSQL and the core of one of them: what another node stored
reaches this node's courier even when its wake-up comes late (or never: a LISTEN connection down)."""

from __future__ import annotations

import asyncio
import time

from dmds.core.model import ItemKind
from dmds.core.service import Service
from dmds.settings import DeliverySettings, StoreSettings
from dmds.stores.postgresql import PostgresStore
from tests.core.test_service import CHEAP, RecordingEndpoint


async def test_an_item_of_another_node_below_an_offered_one_is_read_before_it(pg_url: str) -> None:
    here = await PostgresStore.open(pg_url, StoreSettings(), "here")
    there = await PostgresStore.open(pg_url, StoreSettings(), "there")
    service = Service(here, DeliverySettings(max_pending_pushes=8), CHEAP)  # no cluster: no wake-ups
    try:
        for alias in ("ana", "bob", "eva"):
            await service.register(f"User {alias}", alias, "01/02/2000")
        ana, bob = RecordingEndpoint(confirms=True), RecordingEndpoint(confirms=True)
        await service.connect("ana", ana)
        await service.connect("bob", bob)
        await asyncio.sleep(0.2)  # ana's courier has read her (empty) outbox
        # Eva writes through the other node; its notification is late. Then Bob writes through this
        # node, whose courier is offered his message at once: it must not skip Eva's below it.
        await there.add_message("eva", "ana", "first", now=time.time(), max_stored=9, max_stored_bytes=999)
        await service.send("bob", "ana", "second")
        assert [(i.peer, i.message_id) for i in await ana.wait_for(2)] == [("eva", 1), ("bob", 2)]
        # The late wake-up finds nothing more and pushes nothing twice.
        service.cluster_woken({"ana"})
        await asyncio.sleep(0.2)
        assert len(ana.items) == 2
        # The same for a receipt: Ana's ack settled by the other node gives Bob his receipt there;
        # a message to Bob stored here after it is offered here.
        await service.connect("eva", RecordingEndpoint(confirms=True))
        await there.mark_delivered("ana", [2], time.time())
        await service.send("eva", "bob", "third")
        got = await bob.wait_for(2)
        assert [(i.kind, i.message_id) for i in got] == [(ItemKind.DELIVERED, 2), (ItemKind.MESSAGE, 1)]
    finally:
        await service.close()
        await here.close()
        await there.close()


async def test_a_receipt_range_raised_by_another_node_is_pushed_whole_by_this_one(pg_url: str) -> None:
    """Acks on one node, receipts pushed by another: a range the other node raised (its wake-up late)
    lies below the one this node offers, which carries only what this node's ack added. The offer
    names the range's earlier seq as the item before it, so the courier reads the whole range back
    instead of pushing the top and forgetting the rest; each id is pushed once."""
    here = await PostgresStore.open(pg_url, StoreSettings(), "here")
    there = await PostgresStore.open(pg_url, StoreSettings(), "there")
    service = Service(here, DeliverySettings(max_pending_pushes=8), CHEAP)  # no cluster: no wake-ups
    try:
        for alias in ("ana", "bob"):
            await service.register(f"User {alias}", alias, "01/02/2000")
        ana = RecordingEndpoint(confirms=True)
        await service.connect("ana", ana)
        for n in range(1, 7):
            await service.send("ana", "bob", f"m{n}")
        await asyncio.sleep(0.2)  # ana's courier has read her (empty) outbox
        # Bob is on the other node: 2 acked above a gap waits, 1 and 3 close it (one range, 1..3).
        assert await there.mark_delivered("bob", [2], time.time()) == []
        [first] = await there.mark_delivered("bob", [1, 3], time.time())
        assert [m for m, _ in first.receipts] == [1, 2, 3]
        # An ack settled here raises the same range: the item offered carries only 4.
        await service.acknowledge("bob", [4])
        await ana.wait_for(4)
        # More acks there, the wake-up late: the courier pushes only what is new on its connection.
        await there.mark_delivered("bob", [5, 6], time.time())
        service.cluster_woken({"ana"})
        await ana.wait_for(6)
        await asyncio.sleep(0.2)
        assert [(i.kind, i.message_id) for i in ana.items] == [(ItemKind.DELIVERED, n) for n in range(1, 7)]
        # The pushes were recorded: nothing waits for ana, read from either node.
        async with asyncio.timeout(5):
            while await there.pending("ana", 0, 100):
                await asyncio.sleep(0.05)
        assert await here.pending("ana", 0, 100) == []
    finally:
        await service.close()
        await here.close()
        await there.close()
