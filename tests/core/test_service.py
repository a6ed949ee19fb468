"""The core Service on each real store (SQLite in tmp_path, PostgreSQL), with endpoints that record pushes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from dmds.core.model import ItemKind, OutboxItem
from dmds.core.operator import Operator
from dmds.core.ports import Store
from dmds.core.service import Service
from dmds.errors import (
    AliasTaken,
    AlreadyConnected,
    Blocked,
    DeliveryFailed,
    DmdsError,
    InvalidField,
    Kicked,
    LimitExceeded,
    NotConnected,
    UnknownUser,
)
from dmds.settings import AccountSettings, DeliverySettings
from tests.engines import Opener

#: argon2 at its cheapest: tests check behaviour, not hashing cost.
CHEAP = AccountSettings(argon2_time_cost=1, argon2_memory_kib=8, login_failures=3)


class RecordingEndpoint:
    """Records what it is handed; fails on demand, as a vanished listener would."""

    def __init__(self, fail: bool = False, confirms: bool = False) -> None:
        self.items: list[OutboxItem] = []
        self.fail = fail
        self.confirms = confirms
        self.batches = confirms  # as the real ones: a session endpoint takes runs, a classic one not
        self.was_replaced = False
        self.typists: list[str] = []
        self.kicked_for: DmdsError | None = None
        self.arrived = asyncio.Event()

    async def deliver(self, item: OutboxItem) -> None:
        self.deliver_batch([item])

    def deliver_batch(self, items: list[OutboxItem]) -> None:
        for item in items:
            self._deliver(item)

    def _deliver(self, item: OutboxItem) -> None:
        if self.fail:
            raise DeliveryFailed("listener gone")
        if item.kind is ItemKind.MESSAGE:
            self.items.append(item)
        else:  # a receipt per message, as the protocols push a range
            self.items += [dataclasses.replace(item, message_id=m, key=k, ids=()) for m, k in item.receipts]
        self.arrived.set()

    def describe(self) -> str:
        return "recording"

    def replaced(self) -> None:
        self.was_replaced = True

    def typing(self, sender: str) -> None:
        self.typists.append(sender)

    def kicked(self, reason: DmdsError) -> None:
        self.kicked_for = reason

    async def wait_for(self, count: int) -> list[OutboxItem]:
        async with asyncio.timeout(5):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items

    def messages(self) -> list[tuple[str, int, str]]:
        return [(i.peer, i.message_id, i.text) for i in self.items if i.kind is ItemKind.MESSAGE]

    def receipts(self, kind: ItemKind = ItemKind.DELIVERED) -> list[int]:
        return [i.message_id for i in self.items if i.kind is kind]


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    store = await open_store()
    yield store
    await store.close()


@pytest.fixture
async def service(store: Store) -> AsyncIterator[Service]:
    svc = Service(store, DeliverySettings(max_pending_pushes=4, max_stored_messages=50), CHEAP)
    yield svc
    await svc.close()


async def users(service: Service, *aliases: str) -> None:
    for alias in aliases:
        await service.register(f"Name of {alias}", alias, "01/02/2000")


async def test_register_validates_and_refuses_duplicates(service: Service) -> None:
    await users(service, "juan")
    with pytest.raises(AliasTaken):
        await service.register("Other", "juan", "01/01/1990")
    for name, alias, date in [
        ("N", "", "01/01/2000"),
        ("N", "two words", "01/01/2000"),
        ("N", "tab\there", "01/01/2000"),
        ("", "x", "01/01/2000"),
        ("N", "x", "2000-01-01"),
        ("N", "x", "31/02/2000"),
        ("N", "x", "01/01/2999"),
    ]:
        with pytest.raises(InvalidField):
            await service.register(name, alias, date)


async def test_connect_disconnect_rules(service: Service) -> None:
    await users(service, "juan")
    with pytest.raises(UnknownUser):
        await service.connect("ghost", RecordingEndpoint())
    await service.connect("juan", RecordingEndpoint(), classic=True)
    with pytest.raises(AlreadyConnected):  # classic.md: a second CONNECT is refused
        await service.connect("juan", RecordingEndpoint(), classic=True)
    assert await service.connected_users("juan") == ["juan"]
    await service.disconnect("juan")
    with pytest.raises(NotConnected):
        await service.disconnect("juan")
    with pytest.raises(UnknownUser):
        await service.disconnect("ghost")
    with pytest.raises(NotConnected):
        await service.connected_users("juan")
    with pytest.raises(UnknownUser):
        await service.connected_users("ghost")


async def test_send_needs_a_connected_sender_and_a_registered_recipient(service: Service) -> None:
    await users(service, "juan", "maria")
    with pytest.raises(NotConnected):
        await service.send("juan", "maria", "hi")
    with pytest.raises(UnknownUser):
        await service.send("ghost", "maria", "hi")
    await service.connect("juan", RecordingEndpoint())
    with pytest.raises(UnknownUser):
        await service.send("juan", "ghost", "hi")


async def test_live_delivery_and_receipt(service: Service) -> None:
    await users(service, "juan", "maria")
    juan, maria = RecordingEndpoint(), RecordingEndpoint()
    await service.connect("juan", juan)
    await service.connect("maria", maria)
    assert (await service.send("juan", "maria", "uno")).message_id == 1
    assert (await service.send("juan", "maria", "dos")).message_id == 2
    await maria.wait_for(2)
    await juan.wait_for(2)
    assert maria.messages() == [("juan", 1, "uno"), ("juan", 2, "dos")]
    assert juan.receipts() == [1, 2]


async def test_offline_messages_are_delivered_in_order_and_receipts_stored(service: Service) -> None:
    await users(service, "juan", "maria")
    await service.connect("juan", RecordingEndpoint())
    ids = [(await service.send("juan", "maria", f"m{i}")).message_id for i in range(10)]
    assert ids == list(range(1, 11))
    await service.disconnect("juan")  # the receipts must wait for juan
    maria = RecordingEndpoint()
    await service.connect("maria", maria)
    await maria.wait_for(10)  # more than max_pending_pushes: read back from the store in batches
    assert maria.messages() == [("juan", i, f"m{i - 1}") for i in range(1, 11)]
    juan = RecordingEndpoint()
    await asyncio.sleep(0.05)
    await service.connect("juan", juan)
    await juan.wait_for(10)
    assert juan.receipts() == list(range(1, 11))


class SlowEndpoint(RecordingEndpoint):
    """A listener that takes a while per push, so that live sends arrive during a drain."""

    async def deliver(self, item: OutboxItem) -> None:
        await asyncio.sleep(0.002)
        await super().deliver(item)


async def test_live_messages_never_overtake_stored_ones_during_a_drain(service: Service) -> None:
    await users(service, "juan", "maria")
    await service.connect("juan", RecordingEndpoint())
    for i in range(10):  # more than max_pending_pushes (4): the drain reads them in pages
        await service.send("juan", "maria", f"stored {i}")
    maria = SlowEndpoint()
    await service.connect("maria", maria)
    await maria.wait_for(2)  # draining now; these are offered live, page after page
    for i in range(10):
        await service.send("juan", "maria", f"live {i}")
        await asyncio.sleep(0.001)
    await maria.wait_for(20)
    await asyncio.sleep(0.05)  # nothing more comes: each once
    assert [m[1] for m in maria.messages()] == list(range(1, 21))


async def test_flood_past_the_memory_bound_keeps_order(service: Service) -> None:
    await users(service, "juan", "maria")
    maria = RecordingEndpoint()
    await service.connect("juan", RecordingEndpoint())
    await service.connect("maria", maria)
    await asyncio.gather(*(service.send("juan", "maria", str(i)) for i in range(40)))
    await maria.wait_for(40)
    assert [m[1] for m in maria.messages()] == list(range(1, 41))


async def test_failed_push_disconnects_and_keeps_the_message(service: Service) -> None:
    await users(service, "juan", "maria")
    await service.connect("juan", RecordingEndpoint())
    await service.connect("maria", RecordingEndpoint(fail=True))
    await service.send("juan", "maria", "kept")
    async with asyncio.timeout(5):
        while service.is_connected("maria"):
            await asyncio.sleep(0.01)
    maria = RecordingEndpoint()
    await service.connect("maria", maria)
    await maria.wait_for(1)
    assert maria.messages() == [("juan", 1, "kept")]


async def test_stored_message_limit(service: Service) -> None:
    await users(service, "juan", "maria")
    await service.connect("juan", RecordingEndpoint())
    for i in range(50):
        await service.send("juan", "maria", str(i))
    with pytest.raises(LimitExceeded):
        await service.send("juan", "maria", "one too many")
    # The refused message used no id: the next accepted one is 51.
    maria = RecordingEndpoint()
    await service.connect("maria", maria)
    await maria.wait_for(50)
    await asyncio.sleep(0.1)
    assert (await service.send("juan", "maria", "after")).message_id == 51


async def test_unregister_removes_stored_messages_and_presence(service: Service) -> None:
    await users(service, "juan", "maria")
    await service.connect("juan", RecordingEndpoint())
    await service.send("juan", "maria", "lost with maria")
    await service.unregister("maria")
    with pytest.raises(UnknownUser):
        await service.unregister("maria")
    await users(service, "maria")
    maria = RecordingEndpoint()
    await service.connect("maria", maria)
    assert (await service.send("juan", "maria", "new")).message_id == 1  # a new user: ids start again
    await maria.wait_for(1)
    assert maria.messages() == [("juan", 1, "new")]
    await service.unregister("juan")
    assert await service.connected_users("maria") == ["maria"]


async def test_store_survives_reopen(open_store: Opener) -> None:
    store = await open_store()
    svc = Service(store, DeliverySettings())
    await users(svc, "juan", "maria")
    await svc.connect("juan", RecordingEndpoint())
    await svc.send("juan", "maria", "persisted")
    await svc.close()
    await store.close()
    store = await open_store()
    svc = Service(store, DeliverySettings())
    try:
        assert not svc.is_connected("juan")  # everyone starts disconnected
        maria = RecordingEndpoint()
        await svc.connect("maria", maria)
        await maria.wait_for(1)
        assert maria.messages() == [("juan", 1, "persisted")]
    finally:
        await svc.close()
        await store.close()


async def test_an_operator_kick_tells_the_endpoint_and_a_block_keeps_them_out(
    service: Service, store: Store
) -> None:
    await users(service, "juan", "maria")
    juan = RecordingEndpoint()
    await service.connect("juan", juan, classic=True)
    operator = Operator(service, store, clock=lambda: 100.0)
    was = await operator.disconnect("juan", "admin test")
    assert was is not None
    assert was.classic
    assert isinstance(juan.kicked_for, Kicked)
    assert not service.is_connected("juan")
    assert await operator.disconnect("juan", "admin test") is None  # not online: nothing to do
    with pytest.raises(UnknownUser):
        await operator.disconnect("ghost", "admin test")

    await service.connect("maria", maria := RecordingEndpoint())
    done = await operator.block("maria", "admin test")
    assert (done.newly, done.registered, done.was_online is not None) == (True, True, True)
    assert isinstance(maria.kicked_for, Blocked)
    for classic in (True, False):
        with pytest.raises(Blocked):
            await service.connect("maria", RecordingEndpoint(), classic=classic)
    status = await operator.user("maria")
    assert (status.blocked, status.online) == (True, False)
    assert [u.alias for u in await operator.users(prefix="ma")] == ["maria"]
    assert await operator.unblock("maria", "admin test")
    await service.connect("maria", RecordingEndpoint())
    assert (await operator.user("maria")).online
