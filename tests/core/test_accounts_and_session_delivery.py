"""The core's session-protocol side on the real SQLite store: accounts, acks, receipts, presence,
history, attachments, and the classic protocol kept away from protected aliases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dmds.core.model import ItemKind
from dmds.core.service import Service
from dmds.errors import (
    AlreadyConnected,
    BadCredentials,
    BadToken,
    Forbidden,
    InvalidField,
    LimitExceeded,
    RateLimited,
    UnknownAttachment,
)
from dmds.settings import DeliverySettings
from tests.core.test_service import CHEAP, RecordingEndpoint
from tests.engines import Opener

PASSWORD = "correct horse"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Watcher:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def presence_changed(self, alias: str, online: bool) -> None:
        self.changes.append((alias, online))


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(open_store: Opener, clock: Clock) -> AsyncIterator[Service]:
    store = await open_store()
    svc = Service(
        store, DeliverySettings(max_attachment_bytes=100, max_send_rate=5, send_burst=5), CHEAP, clock
    )
    yield svc
    await svc.close()
    await store.close()


async def account(service: Service, alias: str) -> RecordingEndpoint:
    await service.register(f"Name {alias}", alias, "01/02/2000", PASSWORD)
    endpoint = RecordingEndpoint(confirms=True)
    await service.login(alias, PASSWORD, "127.0.0.1")
    await service.connect(alias, endpoint)
    return endpoint


async def test_login_tokens_and_rate_limits(service: Service, clock: Clock) -> None:
    await service.register("Juan", "juan", "01/02/2000", PASSWORD)
    with pytest.raises(InvalidField):
        await service.register("Short", "short", "01/02/2000", "abc")
    token, expires = await service.login("juan", PASSWORD, "10.0.0.1")
    assert expires == clock.now + CHEAP.token_ttl_s
    assert await service.resume(token) == ("juan", expires)
    with pytest.raises(BadCredentials):
        await service.login("ghost", PASSWORD, "10.0.0.1")  # same error as a wrong password
    for _ in range(3):
        with pytest.raises(BadCredentials):
            await service.login("juan", "wrong password", "10.0.0.2")
    with pytest.raises(RateLimited) as info:
        await service.login("juan", PASSWORD, "10.0.0.3")  # even the right one, for now
    assert 0 < info.value.retry_after_s <= CHEAP.login_window_s
    clock.now += CHEAP.login_window_s + 1
    await service.login("juan", PASSWORD, "10.0.0.3")
    clock.now += CHEAP.token_ttl_s
    with pytest.raises(BadToken):
        await service.resume(token)  # expired
    fresh, _ = await service.login("juan", PASSWORD, "10.0.0.3")
    await service.logout("juan", fresh)
    with pytest.raises(BadToken):
        await service.resume(fresh)


async def test_change_password_revokes_tokens(service: Service) -> None:
    await service.register("Juan", "juan", "01/02/2000", PASSWORD)
    token, _ = await service.login("juan", PASSWORD, "a")
    await service.change_password("juan", PASSWORD, "another secret", "a")
    with pytest.raises(BadToken):
        await service.resume(token)
    with pytest.raises(BadCredentials):
        await service.login("juan", PASSWORD, "a")
    await service.login("juan", "another secret", "a")
    await service.delete_account("juan", "another secret", "a")
    with pytest.raises(BadCredentials):
        await service.login("juan", "another secret", "a")


async def test_classic_cannot_act_for_protected_aliases(service: Service) -> None:
    await account(service, "juan")
    await service.register("Pepe", "pepe", "01/02/2000")  # a classic user
    classic = RecordingEndpoint()
    with pytest.raises(Forbidden):
        await service.send("juan", "pepe", "impersonated", classic=True)
    with pytest.raises(Forbidden):
        await service.disconnect("juan", classic=True)
    with pytest.raises(Forbidden):
        await service.unregister("juan", classic=True)
    await service.disconnect("juan")
    with pytest.raises(Forbidden):
        await service.connect("juan", classic, classic=True)
    # Classic users still message protected users.
    await service.connect("pepe", classic, classic=True)
    item = await service.send("pepe", "juan", "hola", classic=True)
    assert item.message_id == 1


async def test_ack_marks_delivered_and_sends_receipts(service: Service) -> None:
    juan = await account(service, "juan")
    maria = await account(service, "maria")
    item = await service.send("juan", "maria", "hola", key="k1")
    await maria.wait_for(1)
    await asyncio.sleep(0.05)
    assert juan.receipts() == []  # pushed, but not confirmed by maria's client yet
    await service.acknowledge("maria", [item.message_id])
    await juan.wait_for(1)
    assert juan.items[0].kind is ItemKind.DELIVERED
    assert (juan.items[0].peer, juan.items[0].message_id, juan.items[0].key) == ("maria", 1, "k1")
    await service.acknowledge("maria", [item.message_id])  # a repeated Ack changes nothing
    await service.mark_read("maria", [item.message_id])
    await juan.wait_for(2)
    assert juan.receipts(ItemKind.READ) == [1]


async def test_unacknowledged_messages_come_back_on_the_next_login(service: Service) -> None:
    await account(service, "juan")
    maria = await account(service, "maria")
    await service.send("juan", "maria", "uno", key="a")
    await maria.wait_for(1)
    again = RecordingEndpoint(confirms=True)
    await service.connect("maria", again)  # a new login takes over
    assert maria.was_replaced
    await again.wait_for(1)
    assert again.messages() == [("juan", 1, "uno")]


async def test_resend_with_the_same_key_is_not_delivered_twice(service: Service) -> None:
    await account(service, "juan")
    maria = await account(service, "maria")
    first = await service.send("juan", "maria", "once", key="same")
    second = await service.send("juan", "maria", "once", key="same")
    assert second.message_id == first.message_id
    await service.acknowledge("maria", [first.message_id])
    third = await service.send("juan", "maria", "once", key="same")  # even after delivery
    assert third.message_id == first.message_id
    await asyncio.sleep(0.05)
    assert maria.messages() == [("juan", 1, "once")]
    assert (await service.send("juan", "maria", "twice", key="other")).message_id == 2


async def test_send_rate_limit(service: Service, clock: Clock) -> None:
    await account(service, "juan")
    await account(service, "maria")
    for i in range(5):
        await service.send("juan", "maria", str(i))
    with pytest.raises(LimitExceeded):
        await service.send("juan", "maria", "too fast")
    clock.now += 1
    await service.send("juan", "maria", "later")


async def test_presence_watchers(service: Service) -> None:
    await account(service, "juan")
    watcher = Watcher()
    assert service.subscribe(watcher) == ["juan"]
    await account(service, "maria")
    await service.connect("maria", RecordingEndpoint(confirms=True))  # takeover: no change
    await service.disconnect("juan")
    assert watcher.changes == [("maria", True), ("juan", False)]
    service.unsubscribe(watcher)
    await service.disconnect("maria")
    assert watcher.changes == [("maria", True), ("juan", False)]
    await service.register("X", "pepe", "01/02/2000")
    await service.connect("pepe", RecordingEndpoint(), classic=True)
    with pytest.raises(AlreadyConnected):
        await service.connect("pepe", RecordingEndpoint(), classic=True)


async def test_history_and_retention(service: Service, clock: Clock) -> None:
    await account(service, "juan")
    await account(service, "maria")
    for i in range(5):
        clock.now += 1
        await service.send("juan" if i % 2 == 0 else "maria", "maria" if i % 2 == 0 else "juan", f"m{i}")
    page = await service.history("juan", "maria", 0, 3)
    assert [m.text for m in page] == ["m4", "m3", "m2"]
    older = await service.history("juan", "maria", page[-1].sent_at, 3)
    assert [m.text for m in older] == ["m1", "m0"]
    assert await service.history("maria", "juan", 0, 10) == await service.history("juan", "maria", 0, 10)
    await service.acknowledge("maria", [1])
    await asyncio.sleep(0.05)  # juan's receipt is pushed and forgotten; it pinned the message till then
    clock.now += 31 * 86400
    assert await service.purge() == 1  # only the delivered one is forgotten
    assert [m.text for m in await service.history("juan", "maria", 0, 10)] == ["m4", "m3", "m2", "m1"]


async def test_attachments(service: Service) -> None:
    await account(service, "juan")
    maria = await account(service, "maria")
    await account(service, "pedro")
    with pytest.raises(LimitExceeded):
        await service.start_upload("juan", "big.bin", "application/octet-stream", 101)
    upload = await service.start_upload("juan", "hola.txt", "text/plain", 10)
    assert await service.append_upload("juan", upload, 0, b"hola ") == (5, 0)
    with pytest.raises(InvalidField):
        await service.append_upload("juan", upload, 0, b"again")  # wrong offset
    with pytest.raises(UnknownAttachment):
        await service.append_upload("pedro", upload, 5, b"mundo")  # not pedro's upload
    with pytest.raises(UnknownAttachment):
        await service.send("juan", "maria", "too early", attachment=upload)
    assert await service.append_upload("juan", upload, 5, b"mundo") == (10, upload)
    await service.send("juan", "maria", "mira", attachment=upload)
    await maria.wait_for(1)
    assert maria.items[0].attachment is not None
    assert await service.read_attachment("maria", upload, 0, 4) == b"hola"
    assert await service.read_attachment("maria", upload, 5, 100) == b"mundo"
    with pytest.raises(UnknownAttachment):
        await service.read_attachment("pedro", upload, 0, 4)


async def test_stored_bytes_limit(open_store: Opener, clock: Clock) -> None:
    store = await open_store()
    svc = Service(store, DeliverySettings(max_stored_bytes=10), CHEAP, clock)
    try:
        await account(svc, "juan")
        await svc.register("Maria", "maria", "01/02/2000", PASSWORD)
        await svc.send("juan", "maria", "12345")
        await svc.send("juan", "maria", "67890")
        with pytest.raises(LimitExceeded):
            await svc.send("juan", "maria", "x")
        maria = RecordingEndpoint(confirms=True)
        await svc.connect("maria", maria)
        await maria.wait_for(2)
        await svc.acknowledge("maria", [1, 2])  # delivered: the room is free again
        assert (await svc.send("juan", "maria", "1234567890")).message_id == 3
    finally:
        await svc.close()
        await store.close()


async def test_a_reregistered_alias_does_not_inherit_history(service: Service) -> None:
    await account(service, "juan")
    await account(service, "maria")
    await service.send("juan", "maria", "private")
    await service.unregister("juan")
    await account(service, "juan")  # somebody else, same alias
    assert await service.history("juan", "maria", 0, 10) == []
    assert [m.text for m in await service.history("maria", "juan", 0, 10)] == ["private"]


async def test_texts_with_nul_and_long_aliases_are_refused(service: Service) -> None:
    await account(service, "juan")
    with pytest.raises(InvalidField):
        await service.send("juan", "juan", "a\0b")
    with pytest.raises(InvalidField):
        await service.register("Long", "x" * 65, "01/02/2000", PASSWORD)


async def test_read_without_ack_gives_both_receipts(service: Service) -> None:
    juan = await account(service, "juan")
    maria = await account(service, "maria")
    await service.send("juan", "maria", "hola")
    await maria.wait_for(1)
    await service.mark_read("maria", [1])
    await juan.wait_for(2)
    assert juan.receipts(ItemKind.DELIVERED) == [1]
    assert juan.receipts(ItemKind.READ) == [1]
