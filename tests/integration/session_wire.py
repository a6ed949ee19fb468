"""A bare session-protocol peer for integration tests: the codec over a real asyncio connection.

Deliberately not the client library (which has its own tests): it shows exactly what goes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from typing import Any, TypeVar

from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, Role

T = TypeVar("T")


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.codec = Connection(Role.CLIENT)
        self.ids = itertools.count(1)
        self.inbox: list[Any] = []  # frames received and not yet taken
        self.closed = False
        self.token = ""
        self.pages = 0  # version 2 Messages frames received (their messages go to the inbox)

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        hello: bool = True,
        tls: ssl.SSLContext | None = None,
        features: tuple[str, ...] = (),
        version: int = f.VERSION,
    ) -> Peer:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
        )
        peer = cls(reader, writer)
        if hello:
            peer.write(f.Hello(version=version, client="tests", features=list(features)))
            await peer.expect(f.Welcome)
        return peer

    def write(self, frame: f.Frame) -> None:
        self.writer.write(self.codec.send(frame, 0))

    def write_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_more(self) -> None:
        data = await self.reader.read(65536)
        self.codec.receive_data(data, 0)
        while (event := self.codec.next_event()) is not None:
            if event is CLOSED_EVENT:
                self.closed = True
                break
            if isinstance(event, f.Messages):
                self.pages += 1
                self.inbox.extend(event.messages)
            else:
                self.inbox.append(event)

    async def expect(self, kind: type[T], timeout_s: float = 10.0, **match: Any) -> T:
        """The first frame of `kind` (with the given field values) received, waiting for it."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i, frame in enumerate(self.inbox):
                    if isinstance(frame, kind) and all(getattr(frame, k) == v for k, v in match.items()):
                        del self.inbox[i]
                        return frame
                if self.closed:
                    raise AssertionError(f"closed before {kind.__name__}; got {self.inbox}")
                await self.read_more()

    async def request(self, frame_type: type[f.Frame], **fields: Any) -> Any:
        """Send a request with a fresh id and return its answer (whatever frame carries re=id)."""
        rid = next(self.ids)
        self.write(frame_type(id=rid, **fields))
        async with asyncio.timeout(10):
            while True:
                for i, frame in enumerate(self.inbox):
                    if getattr(frame, "re", None) == rid:
                        del self.inbox[i]
                        return frame
                if self.closed:
                    raise AssertionError(f"closed before the answer to {frame_type.__name__}: {self.inbox}")
                await self.read_more()

    async def wait_closed(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not self.closed:
                await self.read_more()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def account(
    port: int,
    alias: str,
    password: str = "secret password",
    *,
    register: bool = True,
    features: tuple[str, ...] = (),
    version: int = f.VERSION,
) -> Peer:
    peer = await Peer.open(port, features=features, version=version)
    if register:
        answer = await peer.request(
            f.Register, alias=alias, full_name=f"User {alias}", birth_date="01/02/2000", password=password
        )
        assert isinstance(answer, f.Ok), answer
    answer = await peer.request(f.Login, alias=alias, password=password)
    assert isinstance(answer, f.LoggedIn), answer
    peer.token = answer.token
    return peer
