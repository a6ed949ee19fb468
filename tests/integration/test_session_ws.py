"""The session protocol over WebSocket (what browsers will use) against the real server."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import Connection, Role
from dmds.transports.session_ws import GOING_AWAY, TRY_AGAIN_LATER
from tests import wire
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.integration.session_wire import account


class WsPeer:
    """A browser-like peer: one frame per binary WebSocket message, no length prefix."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.codec = Connection(Role.CLIENT, framed=False)
        self.ids = 0

    async def send(self, frame: f.Frame) -> None:
        await self.ws.send(self.codec.send(frame, 0))

    async def next(self) -> Any:
        async with asyncio.timeout(10):
            self.codec.receive_data(await self.ws.recv(), 0)
        return self.codec.next_event()

    async def request(self, kind: type[f.Frame], **fields: Any) -> Any:
        self.ids += 1
        await self.send(kind(id=self.ids, **fields))
        while True:
            frame = await self.next()
            if getattr(frame, "re", None) == self.ids:
                return frame


async def test_browser_and_tcp_session_users_talk(server: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{server.web_port}/session"
    async with connect(url) as ws:
        peer = WsPeer(ws)
        await peer.send(f.Hello(version=f.VERSION, client="browser"))
        assert isinstance(await peer.next(), f.Welcome)
        registered = await peer.request(
            f.Register, alias="web", full_name="Web User", birth_date="01/02/2000", password="secret password"
        )
        assert isinstance(registered, f.Ok)
        assert isinstance(await peer.request(f.Login, alias="web", password="secret password"), f.LoggedIn)
        tcp = await account(server.session_port, "tcp")
        await tcp.request(f.Send, to="web", key="k", text="hola navegador")
        pushed = await peer.next()
        assert (pushed.sender, pushed.text) == ("tcp", "hola navegador")
        await peer.send(f.Ack(message_ids=[pushed.message_id]))
        assert await tcp.expect(f.Delivered) == f.Delivered(to="web", message_id=1, key="k")
        accepted = await peer.request(f.Send, to="tcp", key="b", text="hola tcp")
        assert accepted.message_id == 1
        assert (await tcp.expect(f.Message)).text == "hola tcp"


async def test_malformed_websocket_frame_gets_an_error_and_a_close(server: ServerProcess) -> None:
    async with connect(f"ws://127.0.0.1:{server.web_port}/session") as ws:
        await ws.send(b"\xc1")
        peer = WsPeer(ws)
        peer.codec.state = peer.codec.state.OPEN  # read the Error without a handshake
        error = await peer.next()
        assert error.code is ErrorCode.BAD_FRAME
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()


async def test_a_burst_of_answers_is_one_websocket_message_per_frame(server: ServerProcess) -> None:
    async with connect(f"ws://127.0.0.1:{server.web_port}/session") as ws:
        peer = WsPeer(ws)
        await peer.send(f.Hello(version=f.VERSION))
        await peer.next()
        await peer.request(
            f.Register, alias="burst", full_name="B", birth_date="01/02/2000", password="secret password"
        )
        await peer.request(f.Login, alias="burst", password="secret password")
        for n in range(1, 21):  # written back to back: the answers leave in one loop pass
            await peer.send(f.Send(id=100 + n, to="burst", key=f"k{n}", text=str(n)))
        seen: set[int] = set()
        while len(seen) < 20:
            frame = await peer.next()  # each WebSocket message decodes to exactly one frame
            if isinstance(frame, f.Accepted):
                seen.add(frame.message_id)
        assert seen == set(range(1, 21))


async def test_past_max_sessions_a_connection_is_refused_on_either_transport(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(*FAST, "--max-sessions", "2")
    first = await account(server.session_port, "first")
    async with connect(f"ws://127.0.0.1:{server.web_port}/session") as ws:
        peer = WsPeer(ws)
        await peer.send(f.Hello(version=f.VERSION))
        assert isinstance(await peer.next(), f.Welcome)  # the second: served
        reader, writer = await asyncio.open_connection("127.0.0.1", server.session_port)
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # the third, over TCP: closed before a byte
        writer.close()
        async with connect(f"ws://127.0.0.1:{server.web_port}/session") as refused:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    await refused.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == TRY_AGAIN_LATER
    await first.close()


async def test_a_stopping_server_refuses_new_websocket_sessions(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, "--stop-timeout-s", "5")
    # A classic REGISTER half sent holds the stop open (in flight) while a browser comes back.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    request = wire.register("Half Way", "halfway", "01/02/2000")
    sock.sendall(request[:5])
    await asyncio.sleep(0.2)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    # Without the refusal it was served, logged in and then cut at the stop's end.
    async with connect(f"ws://127.0.0.1:{server.web_port}/session") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == GOING_AWAY
    sock.sendall(request[5:])
    assert sock.recv(16) == b"0\0"
    sock.close()
    assert await asyncio.to_thread(server.stop, signal.SIGTERM, 15) == 0
