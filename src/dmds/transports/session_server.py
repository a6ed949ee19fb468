"""The session server: the listener of persistent session connections over TCP (and TLS), and
what all its connections share: settings, the heartbeat sweep, the graceful stop.

Each accepted socket gets a `SessionConnection` (`session_connection.py`), which binds the session
codec to the core; WebSocket connections get theirs from `session_ws.py`, into the same server.
Timers: one sweep per server every second calls each codec's `handle_timer` when due (heartbeat
Pings, idle timeout) and ends the lingering that is over, rather than a timer per connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from dmds.core.service import Service
from dmds.protocols.session.codes import ErrorCode
from dmds.settings import ClassicLimits, DeliverySettings, SessionSettings
from dmds.transports.linger import Linger
from dmds.transports.session_connection import Link, SessionConnection

log = logging.getLogger(__name__)

__all__ = ["Link", "SessionConnection", "SessionServer", "tls_context"]

#: Seconds between two sweeps of the heartbeat and idle timers.
SWEEP_S = 1.0
#: Seconds between two looks at what is still in flight while stopping.
STOP_POLL_S = 0.01


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SessionServer:
    def __init__(
        self, service: Service, settings: SessionSettings, delivery: DeliverySettings, limits: ClassicLimits
    ) -> None:
        self.service = service
        self.settings = settings
        self.delivery = delivery
        self.max_text_bytes = limits.max_text_bytes
        self.linger_s, self.linger_idle_s = limits.linger_s, limits.linger_idle_s
        self.connections: set[SessionConnection] = set()
        #: connections answered an Error for bad input and draining what their client still sends
        #: (still in `connections`, so that they count against max_sessions)
        self.lingering: dict[SessionConnection, Linger] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # requests being served, on every connection
        #: a stop has begun: new connections are refused (the WebSocket listener, uvicorn's, still
        #: accepts until the stop's end, and a browser told to go comes back at once)
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: the listener's TLS context, if any: a reload loads a renewed certificate into it
        self.tls: ssl.SSLContext | None = None
        metrics = service.metrics
        #: the hot path's latency histogram, looked up once (None: metrics off)
        self.send_latency = metrics.request("session", "Send") if metrics is not None else None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        if self.settings.tls_cert:
            self.tls = tls_context(self.settings.tls_cert, self.settings.tls_key)
        self._server = await loop.create_server(
            lambda: _TcpProtocol(self), host, port, ssl=self.tls, backlog=1024
        )
        self._sweeper = loop.create_task(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def serving(self) -> bool:
        """The listening socket accepts connections (readiness)."""
        return self._server is not None and self._server.is_serving()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for conn in list(self.connections):
                conn.tick(now)
            for conn, linger in [item for item in self.lingering.items() if item[1].expired(now)]:
                conn.linger_over(linger, now)

    async def stop(self, deadline: float) -> None:
        """The graceful part of a stop: accept no more connections, tell each client (GoAway, to
        those that asked), read no more requests, and wait until those in flight are answered or
        the loop's clock passes `deadline`. `close` follows."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.going_away()
        loop = asyncio.get_running_loop()
        while any(conn.in_flight for conn in self.connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(STOP_POLL_S)
        if waiting := sum(conn.in_flight for conn in self.connections):
            log.warning("stopping with %d session request(s) still unanswered", waiting)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close(ErrorCode.INTERNAL, "server shutting down")
        if self._server is not None:
            await self._server.wait_closed()


class _TcpProtocol(asyncio.Protocol):
    """The TCP (and TLS) binding: the asyncio transport is the session's link."""

    __slots__ = ("session",)

    def __init__(self, server: SessionServer) -> None:
        self.session = SessionConnection(server)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        link = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if self.session.opened(link, str(peer[0]) if peer else "?"):
            link.set_write_buffer_limits(high=self.session.server.settings.max_outgoing_bytes)

    def data_received(self, data: bytes) -> None:
        self.session.received(data)

    def eof_received(self) -> bool:
        self.session.received(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost()

    def pause_writing(self) -> None:
        self.session.too_slow()
