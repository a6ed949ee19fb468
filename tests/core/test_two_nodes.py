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
