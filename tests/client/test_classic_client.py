"""The classic client library (`dmds.client.classic`) against a real `dmds serve`, and against fakes
for the failures a real server does not produce (silence, garbage, malformed pushes)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from dmds.client.classic import (
    MESSAGES,
    AlreadyConnectedError,
    ClassicClient,
    ClassicClientError,
    NotConnectedError,
    PushListener,
    describe,
    request,
)
from dmds.protocols.classic import (
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    MessagePush,
    Push,
    ReceiptPush,
    Register,
    Send,
    SendReply,
    Unregister,
    encode_push,
)
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(60)

WAIT_S = 5.0
HOST = "127.0.0.1"


class Inbox:
    """Collects the pushes one session receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Push] = asyncio.Queue()

    def __call__(self, push: Push) -> None:
        self.queue.put_nowait(push)

    async def next(self) -> Push:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)

    async def take(self, count: int) -> list[Push]:
        return [await self.next() for _ in range(count)]

    async def assert_quiet(self, for_s: float = 0.3) -> None:
        await asyncio.sleep(for_s)
        assert self.queue.empty(), self.queue.get_nowait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def sessions(server: ServerProcess) -> AsyncIterator[Callable[[], tuple[ClassicClient, Inbox]]]:
    made: list[ClassicClient] = []

    def make() -> tuple[ClassicClient, Inbox]:
        inbox = Inbox()
        session = ClassicClient(HOST, server.port, listen_host=HOST, on_push=inbox, timeout_s=WAIT_S)
        made.append(session)
        return session, inbox

    yield make
    for session in made:
        await session.close()


async def test_two_sessions_exchange_messages_and_receipts(
    sessions: Callable[[], tuple[ClassicClient, Inbox]],
) -> None:
    juan, juan_inbox = sessions()
    maria, maria_inbox = sessions()
    assert await juan.register("Juan Perez", "juan123", "01/02/2000") == 0
    assert await maria.register("María López", "maria", "03/04/1999") == 0
    assert await juan.connect("juan123") == 0
    assert await maria.connect("maria") == 0
    assert juan.alias == "juan123"
    assert juan.connected
    assert juan.listener is not None
    assert juan.listener.port > 0

    assert await juan.send("maria", "Hola soy Juan") == (0, 1)
    assert await maria_inbox.next() == MessagePush("juan123", 1, "Hola soy Juan")
    assert await juan_inbox.next() == ReceiptPush(1)

    assert await juan.send("maria", "¿qué tal? 日本") == (0, 2)
    assert await maria.send("juan123", "bien") == (0, 1)
    # Maria's pushes come through one courier in commit order: juan's message 2 was committed when he
    # got his reply, the receipt of her message only once it was pushed to juan. Juan's two pushes may
    # be committed either way round.
    assert await maria_inbox.take(2) == [MessagePush("juan123", 2, "¿qué tal? 日本"), ReceiptPush(1)]
    assert set(await juan_inbox.take(2)) == {ReceiptPush(2), MessagePush("maria", 1, "bien")}

    code, users = await maria.connected_users()
    assert code == 0
    assert sorted(users) == ["juan123", "maria"]

    assert await juan.disconnect() == 0
    assert not juan.connected
    assert juan.listener is None
    code, users = await maria.connected_users()
    assert (code, users) == (0, ["maria"])


async def test_receipt_and_message_both_arrive(sessions: Callable[[], tuple[ClassicClient, Inbox]]) -> None:
    juan, juan_inbox = sessions()
    maria, _ = sessions()
    for session, alias in ((juan, "juan"), (maria, "maria")):
        assert await session.register(alias.title(), alias, "01/01/2001") == 0
        assert await session.connect(alias) == 0
    assert await juan.send("maria", "uno") == (0, 1)
    assert await maria.send("juan", "dos") == (0, 1)
    assert set(await juan_inbox.take(2)) == {ReceiptPush(1), MessagePush("maria", 1, "dos")}


async def test_stored_messages_are_pushed_in_order_on_connect(
    sessions: Callable[[], tuple[ClassicClient, Inbox]],
) -> None:
    juan, juan_inbox = sessions()
    maria, maria_inbox = sessions()
    assert await juan.register("Juan", "juan", "01/01/2001") == 0
    assert await maria.register("Maria", "maria", "01/01/2001") == 0
    assert await juan.connect("juan") == 0
    texts = [f"mensaje {n}" for n in range(1, 11)]
    for n, text in enumerate(texts, start=1):
        assert await juan.send("maria", text) == (0, n)
    await juan_inbox.assert_quiet()  # no receipt for a stored message yet

    assert await maria.connect("maria") == 0
    assert await maria_inbox.take(10) == [MessagePush("juan", n, t) for n, t in enumerate(texts, start=1)]
    assert await juan_inbox.take(10) == [ReceiptPush(n) for n in range(1, 11)]


async def test_result_codes(
    server: ServerProcess, sessions: Callable[[], tuple[ClassicClient, Inbox]]
) -> None:
    juan, _ = sessions()
    other, _ = sessions()
    assert await juan.register("Juan", "juan", "01/01/2001") == 0
    assert await juan.register("Juan Again", "juan", "01/01/2001") == 1
    assert await juan.unregister("nobody") == 1
    assert await juan.connect("nobody") == 1
    assert juan.listener is None  # closed again: the CONNECT failed
    assert not juan.connected

    # A registered sender who is not connected gets 2 (classic.md, dmds column).
    assert await juan.register("Maria", "maria", "01/01/2001") == 0
    reply = await request(HOST, server.port, Send("juan", "maria", "hola"))
    assert isinstance(reply, SendReply)
    assert reply.code == 2
    assert (await request(HOST, server.port, Disconnect("juan"))).code == 2
    assert (await request(HOST, server.port, Disconnect("nobody"))).code == 1
    users = await request(HOST, server.port, ConnectedUsers("juan"))
    assert users == ConnectedUsersReply(1)
    assert (await request(HOST, server.port, ConnectedUsers("nobody"))).code == 2

    assert await juan.connect("juan") == 0
    assert await other.connect("juan") == 2  # already connected, by another session
    assert other.listener is None
    assert await juan.send("nobody", "hola") == (1, 0)
    with pytest.raises(AlreadyConnectedError, match="already connected as juan"):
        await juan.connect("maria")  # one alias per session


async def test_not_connected_session_does_not_ask(
    sessions: Callable[[], tuple[ClassicClient, Inbox]],
) -> None:
    session = ClassicClient(HOST, _free_port())  # nothing listens there: asking would fail differently
    with pytest.raises(NotConnectedError):
        await session.send("maria", "hola")
    with pytest.raises(NotConnectedError):
        await session.connected_users()
    with pytest.raises(NotConnectedError):
        await session.disconnect()


async def test_unregister_the_connected_alias_ends_the_connection(
    sessions: Callable[[], tuple[ClassicClient, Inbox]],
) -> None:
    juan, _ = sessions()
    assert await juan.register("Juan", "juan", "01/01/2001") == 0
    assert await juan.connect("juan") == 0
    assert await juan.unregister("juan") == 0
    assert not juan.connected
    assert juan.listener is None
    assert await juan.connect("juan") == 1


async def test_close_disconnects(
    server: ServerProcess, sessions: Callable[[], tuple[ClassicClient, Inbox]]
) -> None:
    juan, _ = sessions()
    assert await juan.register("Juan", "juan", "01/01/2001") == 0
    async with juan:
        assert await juan.connect("juan") == 0
    assert not juan.connected
    assert (await request(HOST, server.port, Disconnect("juan"))).code == 2  # already disconnected


async def test_request_to_a_closed_port_fails_clearly() -> None:
    port = _free_port()
    with pytest.raises(
        ClassicClientError, match=rf"server unreachable \(127\.0\.0\.1:{port}: Connection refused\)"
    ):
        await request(HOST, port, Register("Juan", "juan", "01/01/2001"), timeout_s=WAIT_S)


async def _fake_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
) -> asyncio.Server:
    return await asyncio.start_server(handle, HOST, 0)


async def test_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await _fake_server(silent)
    port = server.sockets[0].getsockname()[1]
    async with server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ClassicClientError, match=r"no reply from .* within 0\.3 s"):
            await request(HOST, port, Unregister("juan"), timeout_s=0.3)
        assert loop.time() - started < 3


@pytest.mark.parametrize("reply", [b"x\0", b"0", b"", b"0\0\0\0"])
async def test_bad_reply_fails_clearly(reply: bytes) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await _fake_server(garbage)
    port = server.sockets[0].getsockname()[1]
    async with server:
        # b"0\0\0\0" is short of a SEND reply's 4 id bytes; the others break any reply.
        with pytest.raises(ClassicClientError, match="bad reply from"):
            await request(HOST, port, Send("a", "b", "c"), timeout_s=WAIT_S)


async def test_a_field_with_nul_is_refused_locally() -> None:
    with pytest.raises(ClassicClientError, match="cannot send REGISTER"):
        await request(HOST, _free_port(), Register("Juan\0", "juan", "01/01/2001"))


async def _write(port: int, data: bytes, *, close: bool = True) -> None:
    _, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()


async def test_push_listener_ignores_malformed_pushes() -> None:
    inbox = Inbox()
    listener = await PushListener.start(HOST, on_push=inbox)
    try:
        await _write(listener.port, b"")
        await _write(listener.port, b"HELLO\0")
        await _write(listener.port, b"SEND_MESSAGE\0juan\0notanumber\0hola\0")
        await _write(listener.port, b"SEND_MESS_ACK\0")  # EOF before the id
        await _write(listener.port, b"SEND_MESSAGE\0juan\0" + b"9" * 50)
        await _write(listener.port, encode_push(MessagePush("juan", 7, "hola")))
        assert await inbox.next() == MessagePush("juan", 7, "hola")
        await inbox.assert_quiet()
    finally:
        await listener.close()


async def test_push_listener_keeps_arrival_order_when_a_push_arrives_slowly() -> None:
    inbox = Inbox()
    listener = await PushListener.start(HOST, on_push=inbox)
    try:
        first, second = encode_push(MessagePush("juan", 1, "one")), encode_push(ReceiptPush(2))
        _, slow = await asyncio.open_connection(HOST, listener.port)
        slow.write(first[:5])  # the first connection is accepted, but its push is not complete yet
        await slow.drain()
        await asyncio.sleep(0.1)
        await _write(listener.port, second)
        await inbox.assert_quiet(0.2)  # the second waits for the first
        slow.write(first[5:])
        slow.close()
        assert await inbox.take(2) == [MessagePush("juan", 1, "one"), ReceiptPush(2)]
    finally:
        await listener.close()


async def test_push_listener_async_callback_and_failing_callback() -> None:
    got: list[Push] = []

    async def on_push(push: Push) -> None:
        await asyncio.sleep(0)
        if isinstance(push, ReceiptPush) and push.message_id == 1:
            raise RuntimeError("callback bug")
        got.append(push)

    listener = await PushListener.start(HOST, on_push=on_push)
    try:
        await _write(listener.port, encode_push(ReceiptPush(1)))
        await _write(listener.port, encode_push(ReceiptPush(2)))
        async with asyncio.timeout(WAIT_S):
            while not got:
                await asyncio.sleep(0.01)
        assert got == [ReceiptPush(2)]
    finally:
        await listener.close()


async def test_push_listener_close_drops_pending_connections() -> None:
    listener = await PushListener.start(HOST, on_push=Inbox())
    _, writer = await asyncio.open_connection(HOST, listener.port)
    writer.write(b"SEND_MESS")
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(listener.close(), WAIT_S)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await _write(listener.port, encode_push(ReceiptPush(1)))


def test_messages_cover_every_result_code() -> None:
    codes = {
        "REGISTER": 3,
        "UNREGISTER": 3,
        "CONNECT": 4,
        "DISCONNECT": 4,
        "SEND": 3,
        "CONNECTEDUSERS": 3,
    }
    assert set(MESSAGES) == {(op, code) for op, count in codes.items() for code in range(count)}
    assert MESSAGES["REGISTER", 1] == "alias already taken"
    assert describe("register", 1) == "alias already taken"
    assert describe("SEND", 9) == "unexpected result code 9"


async def test_longest_text_travels_whole(sessions: Callable[[], tuple[ClassicClient, Inbox]]) -> None:
    juan, juan_inbox = sessions()
    assert await juan.register("Juan", "juan", "01/01/2001") == 0
    assert await juan.connect("juan") == 0
    longest = "ñ" * (65536 // 2)  # the server's default limit, in bytes
    assert await juan.send("juan", longest) == (0, 1)
    assert await juan_inbox.next() == MessagePush("juan", 1, longest)
    assert await juan.send("juan", longest + "x") == (2, 0)  # one byte too many: "other error"
