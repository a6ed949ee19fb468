"""The session client library (`dmds.client.session`) and its blocking wrapper against a real
`dmds serve`, including a server killed and restarted under the client's feet."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pytest

from dmds.client.blocking import Client
from dmds.client.session import (
    ERROR_TEXT,
    UPLOAD_CHUNK_BYTES,
    ConnectionLost,
    Delivered,
    Disconnected,
    Event,
    Message,
    PresenceChanged,
    Read,
    Reconnected,
    SessionClient,
    SessionError,
)
from dmds.protocols.session.codes import ErrorCode
from tests.conftest import ServerFactory, ServerProcess, TlsServer

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
PASSWORD = "secret password"
WAIT_S = 10.0
E = TypeVar("E")


class Inbox:
    """The events of one client (its on_event callback), taken out by kind as the test expects them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def expect(self, kind: type[E], timeout_s: float = WAIT_S, **match: Any) -> E:
        """The first event of `kind` with the given field values, waiting for it; taken out."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i, event in enumerate(self.events):
                    if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                        del self.events[i]
                        return event
                self._changed.clear()
                await self._changed.wait()

    def count(self, kind: type[Any]) -> int:
        return sum(isinstance(event, kind) for event in self.events)


class Connect(Protocol):
    def __call__(self, port: int | None = None, **options: Any) -> Awaitable[SessionClient]: ...


@pytest.fixture
async def connect(server: ServerProcess) -> AsyncIterator[Connect]:
    made: list[SessionClient] = []

    async def make(port: int | None = None, **options: Any) -> SessionClient:
        client = await SessionClient.connect(HOST, port or server.session_port, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def account(
    connect: Connect | Callable[..., Awaitable[SessionClient]],
    alias: str,
    *,
    register: bool = True,
    **options: Any,
) -> SessionClient:
    client = await connect(**options)
    if register:
        await client.register(alias, f"User {alias}", "01/02/2000", PASSWORD)
    await client.login(alias, PASSWORD)
    return client


async def test_two_clients_exchange_messages_with_receipts(connect: Connect) -> None:
    juan_inbox = Inbox()
    juan = await account(connect, "juan", on_event=juan_inbox)
    maria = await account(connect, "maria")
    accepted = await juan.send("maria", "hola maria", key="k-1")
    assert (accepted.to, accepted.key, accepted.message_id) == ("maria", "k-1", 1)
    with pytest.raises(RuntimeError):
        await anext(juan.events())  # juan's events go to its callback
    events = maria.events()  # the queue: maria has no on_event callback
    message = await asyncio.wait_for(anext(events), WAIT_S)
    assert isinstance(message, Message)
    assert (message.sender, message.message_id, message.text) == ("juan", 1, "hola maria")
    # acknowledged automatically once handed over: juan gets the receipt
    assert await juan_inbox.expect(Delivered) == Delivered(to="maria", message_id=1, key="k-1")
    await maria.mark_read([message.message_id])
    assert await juan_inbox.expect(Read) == Read(to="maria", message_id=1, key="k-1")
    # and back, with a key of the library's choosing
    back = await maria.send("juan", "hola juan")
    assert len(back.key) == 32
    assert (await juan_inbox.expect(Message)).text == "hola juan"
    await maria.close()
    assert [event async for event in events] == []  # closing ends the iteration


async def test_presence(connect: Connect) -> None:
    inbox = Inbox()
    juan = await account(connect, "juan", on_event=inbox)
    assert await juan.subscribe() == ["juan"]
    maria = await account(connect, "maria")
    assert await inbox.expect(PresenceChanged) == PresenceChanged(alias="maria", online=True)
    assert juan.online == {"juan", "maria"}
    await maria.close()
    assert await inbox.expect(PresenceChanged) == PresenceChanged(alias="maria", online=False)
    assert juan.online == {"juan"}


async def test_history_pages_back(connect: Connect) -> None:
    juan = await account(connect, "juan")
    maria = await account(connect, "maria")
    for n in range(3):
        await juan.send("maria", f"j{n}")
    await maria.send("juan", "m0")
    page = await maria.history("juan", limit=3)
    assert [e.text for e in page.entries] == ["m0", "j2", "j1"]  # newest first
    assert page.more
    older = await maria.history("juan", before=page.entries[-1].sent_at, limit=3)
    assert [e.text for e in older.entries] == ["j0"]
    assert not older.more
    assert [(e.sender, e.recipient) for e in older.entries] == [("juan", "maria")]


async def test_upload_and_fetch_binary_in_chunks(connect: Connect) -> None:
    juan = await account(connect, "juan")
    inbox = Inbox()
    maria = await account(connect, "maria", on_event=inbox)
    data = os.urandom(600 * 1024) + b"\x00\xff\r\n"
    assert len(data) > 2 * UPLOAD_CHUNK_BYTES  # three chunks
    attachment = await juan.upload("photo.bin", "application/octet-stream", data)
    await juan.send("maria", "mira", attachment=attachment)
    message = await inbox.expect(Message)
    assert message.attachment is not None
    assert (message.attachment.name, message.attachment.size) == ("photo.bin", len(data))
    assert await maria.fetch(message.attachment.attachment_id) == data
    assert await juan.fetch(attachment) == data
    with pytest.raises(SessionError) as failed:
        await maria.fetch(attachment + 1000)
    assert failed.value.code is ErrorCode.UNKNOWN_ATTACHMENT


async def test_limits_from_welcome_are_respected(server_factory: ServerFactory) -> None:
    server = server_factory("--max-frame-bytes", "65536", "--max-text-bytes", "100")
    client = await SessionClient.connect(HOST, server.session_port)
    try:
        assert client.welcome.max_frame_bytes == 65536
        await client.register("juan", "Juan", "01/02/2000", PASSWORD)
        await client.login("juan", PASSWORD)
        data = os.urandom(300 * 1024)
        # chunks of 256 KiB would be frames above 64 KiB, which the server refuses by closing
        attachment = await client.upload("big", "application/octet-stream", data)
        assert await client.fetch(attachment) == data
        with pytest.raises(ValueError, match="100 bytes"):
            await client.send("juan", "x" * 101)
        with pytest.raises(ValueError, match="attachment larger"):
            await client.upload("huge", "x/y", bytes(client.welcome.max_attachment_bytes + 1))
        with pytest.raises(ValueError, match="invalid History"):
            await client.history("juan", limit=501)  # the server would close the connection
        assert (await client.send("juan", "x" * 100)).message_id == 1  # still connected
    finally:
        await client.close()


async def test_errors_carry_the_code_and_say_it_in_words(connect: Connect) -> None:
    assert set(ERROR_TEXT) == set(ErrorCode)
    client = await connect()
    with pytest.raises(SessionError) as failed:
        await client.send("maria", "hola")
    assert failed.value.code is ErrorCode.NOT_LOGGED_IN
    assert str(failed.value) == "not logged in"
    await client.register("juan", "Juan", "01/02/2000", PASSWORD)
    with pytest.raises(SessionError) as failed:
        await client.register("juan", "Juan", "01/02/2000", PASSWORD)
    assert failed.value.code is ErrorCode.ALIAS_TAKEN
    with pytest.raises(SessionError) as failed:
        await client.login("juan", "wrong password")
    assert failed.value.code is ErrorCode.BAD_CREDENTIALS
    assert str(failed.value) == "wrong alias or password"
    with pytest.raises(SessionError) as failed:
        await client.register("pepe", "Pepe", "01/02/2000", "short")
    assert failed.value.code is ErrorCode.INVALID_FIELD
    assert str(failed.value).startswith("invalid value: password shorter than")
    await client.login("juan", PASSWORD)
    with pytest.raises(SessionError) as failed:
        await client.send("nobody", "hola")
    assert failed.value.code is ErrorCode.UNKNOWN_USER
    with pytest.raises(SessionError) as failed:
        await client.resume(client.token)
    assert failed.value.code is ErrorCode.ALREADY_LOGGED_IN
    await client.logout()
    assert (client.alias, client.token) == (None, "")
    with pytest.raises(SessionError) as failed:
        await client.resume("not-a-token")
    assert failed.value.code is ErrorCode.BAD_TOKEN


async def test_a_token_resumes_the_session_on_another_connection(connect: Connect) -> None:
    first = await account(connect, "juan")
    token = first.token
    await first.close()
    second = await connect()
    assert await second.resume(token) == "juan"
    assert (await second.send("juan", "still me")).message_id == 1


async def test_a_burst_of_requests_is_one_write(connect: Connect) -> None:
    juan = await account(connect, "juan")
    assert juan._link is not None
    assert juan._link.transport is not None
    transport = juan._link.transport
    writes: list[int] = []
    write = transport.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        write(data)

    transport.write = counting_write  # type: ignore[method-assign]
    accepted = await asyncio.gather(*(juan.send("juan", f"m{n}") for n in range(100)))
    assert sorted(a.message_id for a in accepted) == list(range(1, 101))
    # every Send in one write; then the Acks of the 100 messages to oneself, in few writes
    assert len(writes) < 10
    assert writes[0] > 100 * 30


async def test_heartbeats_keep_an_idle_connection_open(server_factory: ServerFactory) -> None:
    server = server_factory("--heartbeat-s", "0.2", "--idle-timeout-s", "1")
    inbox = Inbox()
    client = await SessionClient.connect(HOST, server.session_port, on_event=inbox)
    try:
        await client.register("juan", "Juan", "01/02/2000", PASSWORD)
        await client.login("juan", PASSWORD)
        await asyncio.sleep(2.5)  # idle for longer than the server's idle timeout (and its sweep)
        assert client.connected
        assert inbox.count(Disconnected) == 0
        assert (await client.send("juan", "still here")).message_id == 1
    finally:
        await client.close()


async def test_tls_verifies_the_server(tls_server: TlsServer) -> None:
    server, context = tls_server.server, tls_server.context
    client = await SessionClient.connect(HOST, server.session_port, ssl=context, server_hostname="localhost")
    try:
        await client.register("tls", "T", "01/02/2000", PASSWORD)
    finally:
        await client.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await SessionClient.connect(HOST, server.session_port, ssl=True)  # not trusted: refused


# --- losing the connection -----------------------------------------------------------------------


async def test_without_reconnect_a_drop_fails_pending_requests(server_factory: ServerFactory) -> None:
    server = server_factory()
    inbox = Inbox()
    juan = await SessionClient.connect(HOST, server.session_port, on_event=inbox)
    await juan.register("juan", "Juan", "01/02/2000", PASSWORD)
    await juan.login("juan", PASSWORD)
    sends = [asyncio.create_task(juan.send("juan", f"m{n}")) for n in range(200)]
    await asyncio.sleep(0)  # written
    server.kill()
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), WAIT_S)
    assert any(isinstance(r, ConnectionLost) for r in results)
    disconnected = await inbox.expect(Disconnected)
    assert not disconnected.reconnecting
    assert juan.closed
    with pytest.raises(ConnectionLost):
        await juan.send("juan", "too late")
    await juan.close()


async def test_reconnects_to_a_restarted_server_and_loses_or_repeats_nothing(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    inbox = Inbox()
    maria = await account(lambda: SessionClient.connect(HOST, server.session_port), "maria")
    await maria.close()
    juan = await account(
        lambda: SessionClient.connect(HOST, server.session_port, reconnect=True, on_event=inbox), "juan"
    )
    try:
        await juan.subscribe()
        answered = [await juan.send("maria", f"m{n}") for n in range(5)]
        pending = [asyncio.create_task(juan.send("maria", f"m{n}")) for n in range(5, 300)]
        # SIGKILL as soon as the first answer is in: some sends answered, some committed but not
        # answered, some never read
        assert server.proc is not None
        pending[0].add_done_callback(lambda _: server.proc.kill() if server.proc else None)
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        server.kill()  # reaped
        assert (await inbox.expect(Disconnected)).reconnecting
        again = await asyncio.to_thread(server_factory, data_dir=server.data_dir)
        juan.port = again.session_port  # where the next attempt goes
        answered += await asyncio.wait_for(asyncio.gather(*pending), 3 * WAIT_S)
        await inbox.expect(Reconnected)
        assert juan.connected
        assert juan.alias == "juan"
        assert juan.online == {"juan"}
        # 300 different messages, each committed once: ids 1..300 in maria's mailbox, no gaps
        assert sorted(a.message_id for a in answered) == list(range(1, 301))
        maria = await account(
            lambda: SessionClient.connect(HOST, again.session_port), "maria", register=False
        )
        page = await maria.history("juan", limit=500)
        assert sorted(e.text for e in page.entries) == sorted(f"m{n}" for n in range(300))
        await maria.close()
        # and the session goes on
        assert (await juan.send("maria", "after")).message_id == 301
    finally:
        await juan.close()


async def test_a_dropped_connection_resends_and_a_message_is_handed_over_once(connect: Connect) -> None:
    juan_inbox, maria_inbox = Inbox(), Inbox()
    juan = await account(connect, "juan", on_event=juan_inbox)
    maria: SessionClient | None = None

    def drop_at_first_message(event: Event) -> None:
        maria_inbox(event)
        if isinstance(event, Message) and maria_inbox.count(Message) == 1:
            assert maria is not None
            assert maria._link is not None
            maria._link.abort()  # the network fails: the Ack is not written

    maria = await account(connect, "maria", reconnect=True, on_event=drop_at_first_message)
    await juan.send("maria", "hola")
    assert (await maria_inbox.expect(Disconnected)).reconnecting
    await maria_inbox.expect(Reconnected)
    sent = [await maria.send("juan", f"r{n}") for n in range(3)]
    assert [a.message_id for a in sent] == [1, 2, 3]
    await juan_inbox.expect(Delivered, to="maria", message_id=1)
    await maria.history("juan")  # one more round trip: a second push would be in by now
    assert maria_inbox.count(Message) == 1


async def test_reconnection_gives_up_after_its_attempts(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dmds.client.session.RECONNECT_ATTEMPTS", 2)
    monkeypatch.setattr("dmds.client.session.RECONNECT_FIRST_DELAY_S", 0.01)
    server = server_factory()
    inbox = Inbox()
    juan = await account(
        lambda: SessionClient.connect(HOST, server.session_port, reconnect=True, on_event=inbox), "juan"
    )
    server.kill()
    assert (await inbox.expect(Disconnected)).reconnecting
    sending = asyncio.create_task(juan.send("juan", "waits for the connection"))
    final = await inbox.expect(Disconnected)
    assert not final.reconnecting
    assert final.reason.endswith("gave up after 2 attempts to reconnect")
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(sending, WAIT_S)
    assert juan.closed
    await juan.close()


async def test_a_revoked_token_ends_reconnection(connect: Connect) -> None:
    inbox = Inbox()
    juan = await account(connect, "juan", reconnect=True, on_event=inbox)
    await juan.change_password(PASSWORD, "another password")
    assert juan._link is not None
    juan._link.abort()
    assert (await inbox.expect(Disconnected, reconnecting=True)).reason
    final = await inbox.expect(Disconnected, reconnecting=False)
    assert final.reason.startswith("could not resume the session")
    assert juan.closed


async def test_a_newer_login_elsewhere_is_not_fought(connect: Connect) -> None:
    inbox = Inbox()
    await account(connect, "juan", reconnect=True, on_event=inbox)
    await account(connect, "juan", register=False)
    final = await inbox.expect(Disconnected)
    assert not final.reconnecting
    assert "logged in again elsewhere" in final.reason


# --- the blocking wrapper ------------------------------------------------------------------------


def test_blocking_client_round_trip(server: ServerProcess) -> None:
    with Client(HOST, server.session_port) as juan, Client(HOST, server.session_port) as maria:
        juan.register("juan", "Juan", "01/02/2000", PASSWORD)
        maria.register("maria", "Maria", "01/02/2000", PASSWORD)
        juan.login("juan", PASSWORD)
        maria.login("maria", PASSWORD)
        assert sorted(juan.subscribe()) == ["juan", "maria"]
        assert juan.send("maria", "hola") == 1
        message = maria.receive(timeout=WAIT_S)
        assert message is not None
        assert (message.sender, message.text) == ("juan", "hola")
        maria.mark_read([message.message_id])
        delivered, read = juan.next_event(WAIT_S), juan.next_event(WAIT_S)
        assert isinstance(delivered, Delivered)
        assert (delivered.to, delivered.message_id) == ("maria", 1)
        assert isinstance(read, Read)
        assert [e.text for e in juan.history("maria").entries] == ["hola"]
        assert maria.receive(timeout=0.05) is None
        with pytest.raises(SessionError):
            juan.send("nobody", "hola")
    with pytest.raises(ConnectionRefusedError):
        Client(HOST, 1)


async def test_a_failed_request_does_not_keep_its_caller_alive(connect: Connect) -> None:
    # Regression: the failure's traceback held the frames that held the future that held the
    # failure, so callers lived on until the cyclic GC ran, in whatever thread (Qt objects too).
    client = await connect()

    class Caller:
        async def go(self) -> None:
            with contextlib.suppress(SessionError):
                await client.login("nobody", "wrong password")

    caller = Caller()
    ref = weakref.ref(caller)
    gc.disable()
    try:
        await caller.go()
        await asyncio.sleep(0.05)
        del caller
        assert ref() is None
    finally:
        gc.enable()
