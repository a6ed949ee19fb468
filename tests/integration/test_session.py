"""The session protocol against the real `dmds serve` on 127.0.0.1, classic users included."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
from typing import Any

import pytest

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from tests import wire
from tests.conftest import ServerFactory, ServerProcess, TlsServer
from tests.integration.listener import Listener, exchange, message, receipt
from tests.integration.session_wire import Peer, account


async def test_message_ack_receipts_and_read(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    accepted = await juan.request(f.Send, to="maria", key="k1", text="hola")
    assert accepted == f.Accepted(re=accepted.re, to="maria", key="k1", message_id=1)
    pushed = await maria.expect(f.Message)
    assert (pushed.sender, pushed.message_id, pushed.text) == ("juan", 1, "hola")
    maria.write(f.Ack(message_ids=[1]))
    assert await juan.expect(f.Delivered) == f.Delivered(to="maria", message_id=1, key="k1")
    maria.write(f.MarkRead(message_ids=[1]))
    assert await juan.expect(f.Read) == f.Read(to="maria", message_id=1, key="k1")


async def test_offline_messages_arrive_in_order_on_login(server: ServerProcess) -> None:
    await (await account(server.session_port, "maria")).close()
    juan = await account(server.session_port, "juan")
    for n in range(1, 6):
        assert (await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}")).message_id == n
    maria = await account(server.session_port, "maria", register=False)
    got = [await maria.expect(f.Message, message_id=n) for n in range(1, 6)]
    assert [m.text for m in got] == [f"m{n}" for n in range(1, 6)]
    maria.write(f.Ack(message_ids=[1, 2, 3, 4, 5]))
    for n in range(1, 6):
        await juan.expect(f.Delivered, message_id=n)


async def test_unacknowledged_messages_come_again_after_reconnect(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    await juan.request(f.Send, to="maria", key="a", text="uno")
    await maria.expect(f.Message)
    await maria.close()  # dropped before acknowledging
    again = await Peer.open(server.session_port)
    assert isinstance(await again.request(f.Login, token=maria.token), f.LoggedIn)  # resumes by token
    assert (await again.expect(f.Message)).text == "uno"


async def test_resend_with_the_same_key_after_a_dropped_connection(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    juan.write(f.Send(id=99, to="maria", key="once", text="only once"))
    await juan.close()  # dropped before reading the answer: did it arrive?
    juan = await Peer.open(server.session_port)
    resumed = await juan.request(f.Login, token=(await account_token(server, "juan")))
    assert isinstance(resumed, f.LoggedIn), resumed
    first = await juan.request(f.Send, to="maria", key="once", text="only once")
    assert isinstance(first, f.Accepted), first
    assert first.message_id == 1
    assert (await maria.expect(f.Message)).text == "only once"
    await asyncio.sleep(0.3)
    assert not [m for m in maria.inbox if isinstance(m, f.Message)], "delivered twice"


async def account_token(server: ServerProcess, alias: str) -> str:
    peer = await Peer.open(server.session_port)
    answer = await peer.request(f.Login, alias=alias, password="secret password")
    await peer.close()
    return str(answer.token)


async def test_classic_and_session_users_talk_both_ways(server: ServerProcess) -> None:
    pepe_listener = Listener()
    port = server.port
    assert await asyncio.to_thread(exchange, port, wire.register("Pepe", "pepe", "01/02/2000")) == b"0\0"
    assert await asyncio.to_thread(exchange, port, wire.connect("pepe", pepe_listener.port)) == b"0\0"
    maria = await account(server.session_port, "maria")
    # classic -> session, with the receipt back to the classic sender once maria's client acks
    reply = await asyncio.to_thread(exchange, port, wire.send("pepe", "maria", "hola maria"))
    assert reply == b"0\0\0\0\0\x01"
    pushed = await maria.expect(f.Message)
    assert (pushed.sender, pushed.text) == ("pepe", "hola maria")
    maria.write(f.Ack(message_ids=[pushed.message_id]))
    assert await asyncio.to_thread(pepe_listener.wait, 1) == [receipt(1)]
    # session -> classic, with the receipt back to the session sender once the push is written
    accepted = await maria.request(f.Send, to="pepe", key="x", text="hola pepe")
    assert await asyncio.to_thread(pepe_listener.wait, 2) == [receipt(1), message("maria", 1, "hola pepe")]
    assert await maria.expect(f.Delivered) == f.Delivered(to="pepe", message_id=accepted.message_id, key="x")


async def test_the_classic_protocol_cannot_impersonate_a_protected_user(server: ServerProcess) -> None:
    maria = await account(server.session_port, "maria")
    port = server.port
    listener = Listener()
    assert await asyncio.to_thread(exchange, port, wire.register("Pepe", "pepe", "01/02/2000")) == b"0\0"
    assert await asyncio.to_thread(exchange, port, wire.connect("pepe", listener.port)) == b"0\0"
    assert await asyncio.to_thread(exchange, port, wire.send("maria", "pepe", "fake")) == b"2\0\0\0\0\0"
    assert await asyncio.to_thread(exchange, port, wire.disconnect("maria")) == b"3\0"
    assert await asyncio.to_thread(exchange, port, wire.unregister("maria")) == b"2\0"
    await maria.request(f.Logout)
    assert await asyncio.to_thread(exchange, port, wire.connect("maria", listener.port)) == b"3\0"
    assert listener.pushes == []


async def test_wrong_passwords_are_rate_limited(server_factory: ServerFactory) -> None:
    server = server_factory("--login-failures", "2")
    await (await account(server.session_port, "juan")).close()
    peer = await Peer.open(server.session_port)
    for _ in range(2):
        answer = await peer.request(f.Login, alias="juan", password="wrong one")
        assert answer.code is ErrorCode.BAD_CREDENTIALS
    answer = await peer.request(f.Login, alias="juan", password="secret password")
    assert answer.code is ErrorCode.RATE_LIMITED
    assert answer.retry_after_s > 0
    bad = await peer.request(f.Login, token="not-a-token")
    assert bad.code is ErrorCode.BAD_TOKEN


async def test_requests_need_a_login(server: ServerProcess) -> None:
    peer = await Peer.open(server.session_port)
    answer = await peer.request(f.Send, to="x", key="k", text="t")
    assert answer.code is ErrorCode.NOT_LOGGED_IN


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x00\x00\x01\xc1", ErrorCode.BAD_FRAME),
        (b"\x7f\xff\xff\xff", ErrorCode.FRAME_TOO_LARGE),
        (b"\x00\x00\x00\x03abc", ErrorCode.BAD_FRAME),
    ],
)
async def test_malformed_frames_close_with_an_error(
    server: ServerProcess, data: bytes, code: ErrorCode
) -> None:
    bystander = await account(server.session_port, "bystander")
    peer = await Peer.open(server.session_port)
    peer.write_raw(data)
    assert (await peer.expect(f.Error)).code is code
    await peer.wait_closed()
    assert isinstance(await bystander.request(f.Subscribe), f.Presence)  # no harm to others


async def test_first_frame_must_be_hello(server: ServerProcess) -> None:
    peer = await Peer.open(server.session_port, hello=False)
    peer.codec.state = peer.codec.state.OPEN  # make our codec send Login first anyway
    peer.write(f.Login(id=1, alias="a", password="b"))
    assert (await peer.expect(f.Error)).code is ErrorCode.BAD_FRAME


async def test_presence(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    presence = await juan.request(f.Subscribe)
    assert presence.online == ["juan"]
    maria = await account(server.session_port, "maria")
    assert await juan.expect(f.PresenceChanged) == f.PresenceChanged(alias="maria", online=True)
    await maria.close()
    assert await juan.expect(f.PresenceChanged) == f.PresenceChanged(alias="maria", online=False)


async def test_history_and_attachments(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    ready = await juan.request(f.UploadStart, name="hola.txt", media_type="text/plain", size=6)
    ready = await juan.request(f.UploadChunk, upload=ready.upload, offset=0, data=b"\x00hola\xff")
    assert ready.attachment == ready.upload
    await juan.request(f.Send, to="maria", key="a", text="mira", attachment=ready.attachment)
    pushed = await maria.expect(f.Message)
    assert pushed.attachment == f.Attachment(ready.attachment, "hola.txt", "text/plain", 6)
    chunk = await maria.request(f.Fetch, attachment=ready.attachment)
    assert chunk.data == b"\x00hola\xff"
    page = await maria.request(f.History, peer="juan", limit=10)
    assert [e.text for e in page.entries] == ["mira"]
    too_big = await juan.request(f.UploadStart, name="big", media_type="x/y", size=11 * 1024 * 1024)
    assert too_big.code is ErrorCode.LIMIT_EXCEEDED


async def test_a_client_that_never_reads_is_cut_off_and_keeps_its_messages(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--max-outgoing-bytes", "65536")
    juan = await account(server.session_port, "juan")
    # maria logs in over a raw socket with a tiny receive buffer and then never reads
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.session_port))
    reader, writer = await asyncio.open_connection(sock=sock)
    maria = Peer(reader, writer)
    maria.write(f.Hello(version=f.VERSION))
    await maria.expect(f.Welcome)
    await maria.request(
        f.Register, alias="maria", full_name="M", birth_date="01/02/2000", password="secret password"
    )
    await maria.request(f.Login, alias="maria", password="secret password")
    big = "x" * 60000
    for n in range(60):
        await juan.request(f.Send, to="maria", key=f"k{n}", text=big)
    # juan is unharmed and maria's messages wait for her next login
    assert isinstance(await juan.request(f.Subscribe), f.Presence)
    writer.transport.abort()
    again = await account(server.session_port, "maria", register=False)
    assert (await again.expect(f.Message, message_id=1)).text == big


async def test_tls(tls_server: TlsServer) -> None:
    server, context = tls_server.server, tls_server.context
    peer = await Peer.open(server.session_port, tls=context)
    assert isinstance(
        await peer.request(
            f.Register, alias="tls", full_name="T", birth_date="01/02/2000", password="secret password"
        ),
        f.Ok,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await Peer.open(server.session_port, tls=ssl.create_default_context())  # not trusted: refused


async def test_sigkill_loses_no_accepted_session_message(server_factory: ServerFactory) -> None:
    server = server_factory()
    await (await account(server.session_port, "maria")).close()
    juan = await account(server.session_port, "juan")
    accepted: list[int] = []
    for n in range(200):
        juan.write(f.Send(id=n + 1000, to="maria", key=f"k{n}", text=f"m{n}"))
    while len(accepted) < 100:
        accepted.append((await juan.expect(f.Accepted)).message_id)
    server.kill()
    again = server_factory(data_dir=server.data_dir)
    maria = await account(again.session_port, "maria", register=False)
    for n in accepted:
        assert (await maria.expect(f.Message, message_id=n)).text == f"m{n - 1}"


async def test_frames_queued_before_a_protocol_error_still_go_out(server: ServerProcess) -> None:
    peer = await Peer.open(server.session_port, hello=False)
    hello = peer.codec.send(f.Hello(version=f.VERSION), 0)
    peer.write_raw(hello + b"\x00\x00\x00\x01\xc1")  # Hello, then garbage, in one segment
    assert isinstance(await peer.expect(f.Welcome), f.Welcome)
    assert (await peer.expect(f.Error)).code is ErrorCode.BAD_FRAME
    await peer.wait_closed()
    assert "Traceback" not in server.log()


async def test_history_pages_fit_in_a_frame(server_factory: ServerFactory) -> None:
    server = server_factory("--max-frame-bytes", "200000")
    juan = await account(server.session_port, "juan")
    await (await account(server.session_port, "maria")).close()
    for n in range(6):
        await juan.request(f.Send, to="maria", key=f"k{n}", text=str(n) * 60000)
    page = await juan.request(f.History, peer="maria", limit=6)
    assert 1 <= len(page.entries) < 6  # the rest waits for the next page
    assert page.more
    rest = await juan.request(f.History, peer="maria", before=page.entries[-1].sent_at, limit=6)
    assert len(page.entries) + len(rest.entries) == 6


async def test_login_may_follow_hello_without_waiting(server: ServerProcess) -> None:
    await (await account(server.session_port, "juan")).close()
    peer = await Peer.open(server.session_port, hello=False)
    hello = peer.codec.send(f.Hello(version=f.VERSION), 0)
    login = peer.codec.send(f.Login(id=1, alias="juan", password="secret password"), 0)
    peer.write_raw(hello + login)  # one segment
    assert isinstance(await peer.expect(f.LoggedIn), f.LoggedIn)


async def test_a_login_abandoned_by_its_client_does_not_take_over_the_next(server: ServerProcess) -> None:
    """A client that gives up on a login (no answer in time) and logs in again on a new connection:
    the stale login, checked after the new one, must not take the new session over."""
    first = await account(server.session_port, "juan")
    await first.close()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)  # a server that hangs for a while
    try:
        for _ in range(3):  # attempts that time out: sent, then the connection is dropped
            stale = await Peer.open(server.session_port, hello=False)
            stale.write_raw(
                stale.codec.send(f.Hello(version=f.VERSION), 0)
                + stale.codec.send(f.Login(id=1, alias="juan", password="secret password"), 0)
            )
            await stale.writer.drain()
            stale.writer.close()
        # Resuming with a token needs no password hash: it is done before the stale password
        # logins, which were sent first.
        fresh = await Peer.open(server.session_port, hello=False)
        fresh.write_raw(
            fresh.codec.send(f.Hello(version=f.VERSION), 0)
            + fresh.codec.send(f.Login(id=1, token=first.token), 0)
        )
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    await fresh.expect(f.LoggedIn)
    await asyncio.sleep(1.0)  # every stale login has been checked by now
    assert isinstance(await fresh.request(f.Subscribe), f.Presence)  # still logged in, not taken over


async def test_a_connection_that_never_says_hello_is_closed(server_factory: ServerFactory) -> None:
    server = server_factory("--handshake-timeout-s", "0.5")
    peer = await Peer.open(server.session_port, hello=False)
    assert (await peer.expect(f.Error, timeout_s=5)).code is ErrorCode.IDLE_TIMEOUT
    await peer.wait_closed()


async def test_an_expired_token_is_refused(server_factory: ServerFactory) -> None:
    server = server_factory("--token-ttl-s", "0.5")
    juan = await account(server.session_port, "juan")
    await juan.close()
    await asyncio.sleep(1.0)
    again = await Peer.open(server.session_port)
    answer = await again.request(f.Login, token=juan.token)
    assert answer.code is ErrorCode.BAD_TOKEN
    assert isinstance(await again.request(f.Login, alias="juan", password="secret password"), f.LoggedIn)


async def test_sends_written_together_are_answered_each_as_if_alone(server: ServerProcess) -> None:
    """A pipelining client's sends reach the server in one read and are stored as one request: each
    still gets its own answer, refusals do not hold the others back, ids follow the order sent."""
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    too_long = 65536 + 1  # the default max_text_bytes, plus one; well within a frame
    frames = [f.Send(id=n, to="maria", key=f"k{n}", text=f"m{n}") for n in range(1, 31)]
    frames[4] = f.Send(id=5, to="nobody", key="k5", text="lost")
    frames[9] = f.Send(id=10, to="maria", key="k10", text="nul\0inside")
    frames[14] = f.Send(id=15, to="maria", key="k15", text="x" * too_long)
    frames[19] = f.Send(id=20, to="maria", key="k3", text="m3 again")  # a resend of id 3's key
    juan.write_raw(b"".join(juan.codec.send(frame, 0) for frame in frames))
    answers: dict[int, Any] = {}
    async with asyncio.timeout(10):
        while len(answers) < len(frames):
            assert not juan.closed, juan.inbox
            await juan.read_more()
            for frame in juan.inbox:
                if isinstance(frame, f.Accepted | f.Error):
                    answers[frame.re] = frame
            juan.inbox = [x for x in juan.inbox if not isinstance(x, f.Accepted | f.Error)]
    refused = {n: answers[n].code for n in (5, 10, 15)}
    assert refused == {5: ErrorCode.UNKNOWN_USER, 10: ErrorCode.INVALID_FIELD, 15: ErrorCode.INVALID_FIELD}
    fresh = [n for n in range(1, 31) if n not in (5, 10, 15, 20)]
    assert [answers[n].message_id for n in fresh] == list(range(1, len(fresh) + 1))
    assert answers[20].message_id == answers[3].message_id
    got = [await maria.expect(f.Message, message_id=i) for i in range(1, len(fresh) + 1)]
    assert [m.text for m in got] == [f"m{n}" for n in fresh]
    await asyncio.sleep(0.2)
    assert not [m for m in maria.inbox if isinstance(m, f.Message)], "a resend was delivered twice"


async def test_sends_before_a_bad_frame_in_one_segment_are_stored_and_the_rest_is_not(
    server: ServerProcess,
) -> None:
    """The server reads a segment's frames in one call (next_events): the Sends before a bad frame
    are stored as if they came alone, the bad one closes the connection at once (with no time
    for their Accepted), what follows it is not read. A resend of their keys tells the ids."""
    maria = await account(server.session_port, "maria")
    await maria.close()
    juan = await account(server.session_port, "juan")
    sends = b"".join(
        juan.codec.send(f.Send(id=100 + n, to="maria", key=f"k{n}", text=f"m{n}"), 0) for n in range(3)
    )
    after = juan.codec.send(f.Send(id=200, to="maria", key="late", text="never"), 0)
    juan.write_raw(sends + b"\x00\x00\x00\x03abc" + after)
    assert (await juan.expect(f.Error)).code is ErrorCode.BAD_FRAME
    await juan.wait_closed()
    maria = await account(server.session_port, "maria", register=False)
    got = [await maria.expect(f.Message, message_id=n) for n in (1, 2, 3)]
    assert [m.text for m in got] == ["m0", "m1", "m2"]  # stored before the bad frame, nothing resent
    history = await maria.request(f.History, peer="juan", before=0, limit=10)
    assert sorted(e.text for e in history.entries) == ["m0", "m1", "m2"]  # "never" was not read
    juan = await account(server.session_port, "juan", register=False)
    ids = [(await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}")).message_id for n in range(3)]
    assert ids == [1, 2, 3]  # a resend of their keys: the same ids, nothing stored again
    history = await maria.request(f.History, peer="juan", before=0, limit=10)
    assert len(history.entries) == 3
    assert "Traceback" not in server.log()
