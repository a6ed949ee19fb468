"""Bad input far past a limit gets its error reply, then a clean close: the lingering close.

This used to reset the connection: a classic SEND a few MB over max_text_bytes (or an oversized
session frame) was answered, but the server stopped reading after 64 KiB and aborted (the session
server closed at once, and so did uvicorn after a WebSocket message past 16 MiB), and the reset
destroyed the reply before the client had read it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import Connection, Role
from tests import wire
from tests.conftest import FAST, ServerFactory, ServerProcess, TlsServer
from tests.integration.listener import exchange
from tests.integration.session_wire import Peer, account
from tests.integration.test_session_ws import WsPeer

MB = 1_000_000
CHUNK = 64 * 1024
SEND_REPLY = b"2\0\0\0\0\0"  # classic.md: "other error", and the 4 id bytes of every SEND reply


def classic_request(op: str, size: int) -> bytes:
    if op == "SEND":  # the text is past max_text_bytes (64 KiB by default)
        return wire.send("juan", "maria", "x" * size)
    return wire.register("x" * size, "juan", "01/02/2000")  # the full name, past max_field_bytes


def send_then_read(port: int, data: bytes, *, pace_s: float = 0.0) -> tuple[bytes, float]:
    """Write all of `data` as the original client does (in chunks, `pace_s` apart), then read the
    reply until the server closes. A reset raises. Returns the reply and how long sending took."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        for start in range(0, len(data), CHUNK):
            sock.sendall(data[start : start + CHUNK])
            if pace_s:
                time.sleep(pace_s)
        took = time.monotonic() - started
        reply = b""
        while chunk := sock.recv(4096):  # b"": the server's FIN, not a reset
            reply += chunk
    return reply, took


@pytest.mark.parametrize("size", [2 * MB, 20 * MB], ids=["2MB", "20MB"])
@pytest.mark.parametrize(("op", "reply"), [("SEND", SEND_REPLY), ("REGISTER", b"2\0")])
def test_a_classic_request_megabytes_too_long_gets_its_reply_and_a_clean_close(
    server: ServerProcess, op: str, reply: bytes, size: int
) -> None:
    got, _ = send_then_read(server.port, classic_request(op, size))
    assert got == reply
    assert "longer than" in server.log()
    assert exchange(server.port, wire.register("Still here", "after", "01/02/2000")) == b"0\0"


def test_others_are_served_while_a_huge_request_is_still_arriving(server: ServerProcess) -> None:
    outcome: list[tuple[bytes, float] | BaseException] = []

    def huge() -> None:
        try:  # 20 MB over about 2 s: the error reply is written at the first 64 KiB
            outcome.append(send_then_read(server.port, classic_request("SEND", 20 * MB), pace_s=0.006))
        except BaseException as exc:  # reported by the test below
            outcome.append(exc)

    thread = threading.Thread(target=huge)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    for n in range(5):
        assert exchange(server.port, wire.register(f"User {n}", f"user{n}", "01/02/2000")) == b"0\0"
    served_in = time.monotonic() - started
    assert thread.is_alive(), "the huge request was over before the others were served"
    thread.join(30)
    assert outcome
    assert not isinstance(outcome[0], BaseException), outcome
    reply, took = outcome[0]
    assert reply == SEND_REPLY
    assert took > 1.0  # it was still sending long after its reply
    assert served_in < 1.0


def flood_until_cut_off(sock: socket.socket, limit_s: float) -> tuple[bytes, float, float]:
    """Send without end, reading what comes back meanwhile, until the server cuts the connection.
    Returns what was read, when the first reply bytes came and when the cut came (monotonic)."""
    sock.setblocking(False)
    got, first, started = b"", 0.0, time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            sock.send(b"y" * CHUNK)
        except BlockingIOError:
            pass
        except OSError:  # the reset (or broken pipe) of the time bound
            return got, first, time.monotonic()
        try:
            chunk = sock.recv(4096)
            if chunk:
                got += chunk
                first = first or time.monotonic()
        except BlockingIOError:
            pass
        except OSError:
            return got, first, time.monotonic()
        time.sleep(0.005)
    raise AssertionError(f"not cut off within {limit_s}s")


def test_a_classic_client_that_never_stops_sending_is_cut_off_after_linger_s(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(*FAST, "--linger-s", "1.5", "--linger-idle-s", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"SEND\0juan\0maria\0" + b"x" * 100_000)
        got, first, cut = flood_until_cut_off(sock, 10)
    assert got == SEND_REPLY  # read as soon as it was written, long before the cut
    assert 1.3 < cut - first < 3.0
    assert "still sending after 1.5s" in server.log()


def test_a_silent_classic_client_is_closed_after_linger_idle_s(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, "--linger-idle-s", "0.5")  # linger_s stays 30
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"SEND\0juan\0maria\0" + b"x" * 100_000)
        reply = b""
        while chunk := sock.recv(100):  # the reply, then EOF: the server half-closed
            reply += chunk
        assert reply == SEND_REPLY
        time.sleep(1.5)  # silent past linger_idle_s: the server closed its side fully
        sock.sendall(b"late")  # a closed socket answers with a reset...
        time.sleep(0.2)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.sendall(b"late")  # ...which the next write reports


# -- the session protocol ---------------------------------------------------------------------------


def oversized_frame(size: int) -> bytes:
    return struct.pack(">I", size) + b"\x80" * size


@pytest.mark.parametrize("size", [2 * MB, 20 * MB], ids=["2MB", "20MB"])
async def test_an_oversized_session_frame_gets_its_error_and_a_clean_close(
    server: ServerProcess, size: int
) -> None:
    watcher = await account(server.session_port, "watcher")
    assert isinstance(await watcher.request(f.Subscribe), f.Presence)
    peer = await account(server.session_port, "juan")
    await watcher.expect(f.PresenceChanged, alias="juan", online=True)
    peer.write_raw(oversized_frame(size))
    error = await peer.expect(f.Error)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    # Offline at once, while its client is still sending, not when the connection ends.
    await watcher.expect(f.PresenceChanged, timeout_s=3, alias="juan", online=False)
    await peer.wait_closed()  # EOF, not a reset
    async with asyncio.timeout(20):
        await peer.writer.drain()  # every byte went: the server read them all
    assert isinstance(await watcher.request(f.Subscribe), f.Presence)  # no harm to others
    assert "frame of" in server.log()


async def test_an_oversized_frame_over_tls_gets_its_error(tls_server: TlsServer) -> None:
    peer = await Peer.open(tls_server.server.session_port, tls=tls_server.context)
    peer.write_raw(oversized_frame(20 * MB))
    assert (await peer.expect(f.Error)).code is ErrorCode.FRAME_TOO_LARGE
    await peer.wait_closed()


def test_a_session_client_that_never_stops_sending_is_cut_off_after_linger_s(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(*FAST, "--linger-s", "1.5", "--linger-idle-s", "1")
    codec = Connection(Role.CLIENT)
    with socket.create_connection(("127.0.0.1", server.session_port), timeout=10) as sock:
        sock.sendall(codec.send(f.Hello(version=f.VERSION), 0) + struct.pack(">I", 100 * MB))
        got, first, cut = flood_until_cut_off(sock, 10)
    codec.receive_data(got, 0)
    assert isinstance(codec.next_event(), f.Welcome)
    error = codec.next_event()
    assert isinstance(error, f.Error)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert 1.0 < cut - first < 4.0  # the session server sweeps once a second
    assert "still sending after 1.5s" in server.log()


@pytest.mark.parametrize("size", [2 * MB, 20 * MB], ids=["2MB", "20MB"])
async def test_an_oversized_websocket_message_is_refused_without_a_reset(
    server: ServerProcess, size: int
) -> None:
    async with connect(f"ws://127.0.0.1:{server.web_port}/session", max_size=None) as ws:
        peer = WsPeer(ws)
        await peer.send(f.Hello(version=f.VERSION, client="browser"))
        assert isinstance(await peer.next(), f.Welcome)
        await ws.send(b"\x80" * size)
        frames = []
        with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012 - the frames, then the close
            while True:
                frames.append(await peer.next())
    # A close handshake, not a reset: 1000 after our Error frame; past the WebSocket library's own
    # message limit (16 MiB), its 1009 "message too big".
    assert closed.value.rcvd is not None
    if size < 16 * 2**20:
        assert [type(x) for x in frames] == [f.Error]
        assert frames[0].code is ErrorCode.FRAME_TOO_LARGE
        assert closed.value.rcvd.code == 1000
    else:
        assert closed.value.rcvd.code == 1009


def ws_frame_header(length: int) -> bytes:
    """A masked binary frame's header (RFC 6455 5.2) with a zero mask, for raw WebSocket clients."""
    if length < 126:
        head = struct.pack(">BB", 0x82, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack(">BBH", 0x82, 0x80 | 126, length)
    else:
        head = struct.pack(">BBQ", 0x82, 0x80 | 127, length)
    return head + b"\0\0\0\0"


def test_a_websocket_message_past_16_mib_sent_whole_before_reading_gets_its_close_frame(
    server: ServerProcess,
) -> None:
    """As a client that writes a whole message before it reads: uvicorn closed at once after its
    1009, and the rest of the message reset the connection."""
    with socket.create_connection(("127.0.0.1", server.web_port), timeout=30) as sock:
        sock.sendall(
            b"GET /session HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(1000)
        assert response.startswith(b"HTTP/1.1 101")
        size = 20 * MB
        sock.sendall(ws_frame_header(size))
        for start in range(0, size, CHUNK):  # about 1.5 s
            sock.sendall(b"\x80" * min(CHUNK, size - start))
            time.sleep(0.004)
        got = b""
        while chunk := sock.recv(4096):  # a reset raises
            got += chunk
    assert got[:1] == b"\x88"  # a close frame...
    assert struct.unpack(">H", got[2:4])[0] == 1009  # ..."message too big"
