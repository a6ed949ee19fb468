"""The session protocol over WebSocket (what browsers will use) against the real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import Connection, Role
from tests.conftest import ServerProcess
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
