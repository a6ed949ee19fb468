"""The generator's side of the classic protocol: one request per connection, and push listeners that
hand pushes over in the order the server sent them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dmds.protocols.classic import Push, PushReader, RemoteProtocolError


def fields(*parts: str) -> bytes:
    return b"".join(part.encode() + b"\0" for part in parts)


class Exchange(asyncio.Protocol):
    """One classic request: write it, collect the reply until the server closes."""

    __slots__ = ("_buf", "_done", "_payload")

    def __init__(self, payload: bytes, done: asyncio.Future[bytes]) -> None:
        self._payload = payload
        self._done = done
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._payload)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._buf += data

    def eof_received(self) -> bool | None:
        if not self._done.done():
            self._done.set_result(self._buf)
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            if exc is not None:
                self._done.set_exception(exc)
            else:
                self._done.set_result(self._buf)


async def exchange(host: str, port: int, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    await loop.create_connection(lambda: Exchange(payload, done), host, port)
    return await done


async def ask(host: str, port: int, *parts: str) -> int:
    """A request whose reply is a code alone (REGISTER, CONNECT, DISCONNECT): the code, -1 if garbled."""
    reply = await exchange(host, port, fields(*parts))
    return int(reply[:-1]) if reply.endswith(b"\0") and reply[:-1].isdigit() else -1


def send_reply(reply: bytes) -> tuple[int, int]:
    """(code, id) of a SEND reply: a code field, then 4 raw id bytes (classic.md)."""
    if len(reply) != 6 or reply[1:2] != b"\0" or not reply[:1].isdigit():
        return -1, 0
    return int(reply[:1]), int.from_bytes(reply[2:], "big")


#: What a listener hands over: the push (None for a dial-back that carried none) and when it
#: was complete (perf_counter).
OnPush = Callable[[Push | None, float], None]


class _PushConnection(asyncio.Protocol):
    __slots__ = ("_finished", "_index", "_listener", "_reader")

    def __init__(self, listener: Listener, index: int) -> None:
        self._listener = listener
        self._index = index
        self._reader = PushReader(256, 1 << 20)
        self._finished = False

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        self._reader.receive_data(data)
        self._parse()

    def _parse(self) -> None:
        try:
            push = self._reader.next_event()
        except RemoteProtocolError:  # counted as a dial-back without a push
            self._finish(None)
            return
        if push is not None:
            self._finish(push)

    def _finish(self, push: Push | None) -> None:
        self._finished = True
        self._listener.arrived(self._index, push, time.perf_counter())

    def eof_received(self) -> bool | None:
        if not self._finished:
            self._reader.receive_data(b"")
            self._parse()
            if not self._finished:
                self._finish(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished:
            self._finish(None)


class Listener:
    """A client's push listener on 127.0.0.1: hands pushes over in the order their connections were
    accepted, which is the order the server's courier sent them (it opens the next dial-back only
    once the previous item was written)."""

    def __init__(self, on_push: OnPush) -> None:
        self._on_push = on_push
        self._accepted = 0
        self._next = 0
        self._early: dict[int, tuple[Push | None, float]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            self._connection, "127.0.0.1", 0, backlog=512
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _connection(self) -> _PushConnection:
        conn = _PushConnection(self, self._accepted)
        self._accepted += 1
        return conn

    def arrived(self, index: int, push: Push | None, at: float) -> None:
        if index != self._next:
            self._early[index] = (push, at)
            return
        self._on_push(push, at)
        self._next += 1
        while self._next in self._early:
            self._on_push(*self._early.pop(self._next))
            self._next += 1

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
