"""One connection of the session client: an `asyncio.Protocol` around the sans-I/O codec.

`Link` feeds every chunk it reads to the codec (`protocols.session.connection`), answers the
connection's own frames (Welcome, Ping, Pong, GoAway, an Error that ends the connection) and hands
every other frame to its owner. Frames to send are queued and written once per loop pass
(`call_soon`), all together: a burst of requests or acknowledgements costs one write, and the Acks
of one pass travel as one Ack frame. The codec's timer (`get_timer`/`handle_timer`) runs on a loop
timer: it sends a Ping after `heartbeat_s` of silence and declares the server gone after
`idle_timeout_s` without a frame from it (both from Welcome).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from typing import Any, Final, cast

from dmds.client.oserrors import os_reason
from dmds.client.session_errors import FINAL_CODES, ConnectionLost, SessionError, describe_error
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import (
    CLOSED_EVENT,
    Connection,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
)
from dmds.protocols.session.frames import Welcome

__all__ = ["MAX_INCOMING_FRAME_BYTES", "Link"]

#: Largest frame accepted from the server: above any Message or Chunk a sane server sends.
MAX_INCOMING_FRAME_BYTES: Final = 16 * 1024 * 1024

_TIMER_SLACK_S: Final = 0.005


class Link(asyncio.Protocol):
    """One connection (TCP or TLS): its codec, its transport, its output written once per loop pass.

    `on_frame(link, frame)` gets the frames that are not the connection's own business (pushes and
    answers); `on_lost(link)` is called once, when the connection is gone, with `reason` set.
    """

    def __init__(
        self,
        client_name: str,
        on_frame: Callable[[Link, Any], None],
        on_lost: Callable[[Link], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._client_name = client_name
        self._on_frame = on_frame
        self._on_lost = on_lost
        self.codec = Connection(Role.CLIENT, max_frame_bytes=MAX_INCOMING_FRAME_BYTES, now=self._loop.time())
        self.transport: asyncio.Transport | None = None
        self.welcome: asyncio.Future[Welcome] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        #: why the connection ended (set by whoever learns it first)
        self.reason = ""
        #: the server said not to come back (replaced by a newer login, protocol error)
        self.final = False
        #: the server said it is stopping (GoAway): reconnect at once, to the next address first
        self.going_away = False
        self.acks: list[int] = []
        self._out: list[f.Frame] = []
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def open(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
        timeout_s: float,
    ) -> Welcome:
        """Connect to (host, port) and do the Hello/Welcome handshake; returns the Welcome."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._loop.create_connection(
                    lambda: self,
                    host,
                    port,
                    ssl=ssl,
                    server_hostname=(server_hostname or host) if ssl else None,
                )
                welcome = await self.welcome
        except BaseException:
            self.abort()
            raise
        self.codec.heartbeat_s = welcome.heartbeat_s
        self.codec.idle_timeout_s = welcome.idle_timeout_s
        self.arm_timer()
        return welcome

    # -- asyncio callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.queue(f.Hello(version=f.VERSION, client=self._client_name, features=[f.GOAWAY]))
        self.arm_timer()

    def data_received(self, data: bytes) -> None:
        self.codec.receive_data(data, self._loop.time())
        self._drain()

    def eof_received(self) -> bool:
        self.codec.receive_data(b"", self._loop.time())
        self._drain()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._timer, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._flush_handle = None
        self.codec.close()
        self.writable.set()  # wake requests waiting for room: they see the link is gone
        if not self.reason:
            self.reason = os_reason(exc) or "connection closed by the server"
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionLost(self.reason))
            self.welcome.exception()  # retrieved: nobody may be waiting any more
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _drain(self) -> None:
        try:
            while (frame := self.codec.next_event()) is not None:
                if frame is CLOSED_EVENT:
                    if self.transport is not None:
                        self.transport.close()
                    return
                if not self._on_own_frame(frame):
                    self._on_frame(self, frame)
        except RemoteProtocolError as exc:
            self.reason = f"the server broke the protocol ({exc.message})"
            self.final = True
            self.abort()

    def _on_own_frame(self, frame: Any) -> bool:
        """Handle a frame about the connection itself; False for any other."""
        if isinstance(frame, f.Ping):
            self.queue(f.Pong(n=frame.n))
        elif isinstance(frame, f.Pong):
            pass  # receiving it was the point
        elif isinstance(frame, Welcome):
            if not self.welcome.done():
                self.welcome.set_result(frame)
        elif isinstance(frame, f.GoAway):
            # The server answers nothing more on this connection: go now, and send what is pending
            # again on the next one (a Send's key makes that safe).
            self.reason = f"the server is stopping ({frame.reason or 'no reason given'})"
            self.going_away = True
            self.close()
        elif isinstance(frame, f.Error) and frame.re == 0:
            # The server is closing the connection, and says why.
            self.reason = describe_error(frame.code, frame.message, frame.retry_after_s)
            self.final = frame.code in FINAL_CODES
            if not self.welcome.done():
                self.welcome.set_exception(SessionError(frame.code, frame.message, frame.retry_after_s))
                self.welcome.exception()  # retrieved: the handshake may have timed out already
        else:
            return False
        return True

    # -- output -------------------------------------------------------------------------------------

    def queue(self, frame: f.Frame) -> None:
        self._out.append(frame)
        self._schedule()

    def ack(self, message_id: int) -> None:
        self.acks.append(message_id)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is None and self.codec.state is not State.CLOSED:
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued, in one write."""
        self._flush_handle = None
        out, self._out = self._out, []
        if self.acks:
            # First: a MarkRead of the same pass must not overtake the Ack (Delivered before Read).
            out.insert(0, f.Ack(message_ids=self.acks))
            self.acks = []
        if not out or self.transport is None or self.transport.is_closing():
            self._out = out  # kept for unsent_notes()
            return
        try:
            data = self.codec.send_many(out, self._loop.time())
        except LocalProtocolError:
            self._out = out
            return
        self.transport.write(data)

    def unsent_notes(self) -> list[f.Frame]:
        """The Acks and MarkReads queued and never written: to be written on the next connection."""
        notes: list[f.Frame] = [frame for frame in self._out if isinstance(frame, f.Ack | f.MarkRead)]
        if self.acks:
            notes.insert(0, f.Ack(message_ids=self.acks))
        self._out, self.acks = [], []
        return notes

    def close(self) -> None:
        """Write what is queued, then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    async def close_within(self, timeout_s: float) -> None:
        """`close()`, then wait for the connection to be gone; abort it after `timeout_s`."""
        self.close()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- timers -------------------------------------------------------------------------------------

    def arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.codec.get_timer()
        if due is not None:
            self._timer = self._loop.call_at(due + _TIMER_SLACK_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        try:
            data = self.codec.handle_timer(self._loop.time())
        except RemoteProtocolError as exc:
            self.reason = f"no answer from the server ({exc.message})"
            self.abort()
            return
        if data:
            self.transport.write(data)
        self.arm_timer()
