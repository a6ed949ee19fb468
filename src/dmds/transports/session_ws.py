"""The session protocol over WebSocket, for browsers: the same frames, one per binary message.

A Starlette app with one WebSocket route, `/session`, and the web client's page and assets
(`dmds.web.app`).
Each WebSocket gets a `SessionConnection` with the codec in unframed mode, so everything after the
bytes (login, delivery, receipts, limits) is the TCP server's code. `_WsLink` adapts the WebSocket to
the `Link` the session needs: writes go through a queue drained by one sender task, whose backlog
is bounded by max_outgoing_bytes like the TCP transport's buffer.

The app runs on uvicorn inside `dmds serve`'s event loop, so browser, session and classic users share
one core. `dmds serve` owns the process's signals; the embedded uvicorn server does not install its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from dmds.transports.session_connection import SessionConnection
from dmds.transports.session_server import SessionServer
from dmds.web import app as web

log = logging.getLogger(__name__)

#: WebSocket close code when the server closes a session (RFC 6455: "normal closure").
NORMAL_CLOSURE = 1000
#: Close code for a connection refused because the server is stopping (RFC 6455: "going away").
GOING_AWAY = 1001
#: Close code for a connection refused at max_sessions (RFC 6455 registry: "try again later").
TRY_AGAIN_LATER = 1013
#: Close code for a text message, which the session protocol never uses (RFC 6455: "unsupported data").
UNSUPPORTED_DATA = 1003


class _WsLink:
    def __init__(self, ws: WebSocket, session: SessionConnection, max_outgoing_bytes: int) -> None:
        self.ws = ws
        self.session = session
        self.max_outgoing_bytes = max_outgoing_bytes
        self.queued = 0
        self.outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.readable = asyncio.Event()
        self.readable.set()
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self.queued += len(data)
        if self.queued > self.max_outgoing_bytes:
            self.session.too_slow()
            return
        self.outgoing.put_nowait(data)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.outgoing.put_nowait(None)  # after what is queued

    def abort(self) -> None:
        self.closing = True
        while not self.outgoing.empty():
            self.outgoing.get_nowait()
        self.outgoing.put_nowait(None)

    def is_closing(self) -> bool:
        return self.closing

    # A WebSocket is never half-closed: messages arrive whole, so bad input never lingers here.
    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a WebSocket has no half-close")

    def get_write_buffer_size(self) -> int:
        return self.queued

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    async def send_loop(self) -> None:
        while (data := await self.outgoing.get()) is not None:
            await self.ws.send_bytes(data)
            self.queued -= len(data)
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(NORMAL_CLOSURE)


def build_app(server: SessionServer) -> Starlette:
    async def session_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        session = SessionConnection(server, framed=False)
        link = _WsLink(ws, session, server.settings.max_outgoing_bytes)
        peer = ws.client.host if ws.client else "?"
        if not session.opened(link, peer):
            await ws.close(GOING_AWAY if server.stopping else TRY_AGAIN_LATER)
            return
        sender = asyncio.get_running_loop().create_task(link.send_loop())
        try:
            while not link.closing:
                await link.readable.wait()
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    log.info("session websocket from %s sent text; closing", peer)
                    await ws.close(UNSUPPORTED_DATA)
                    break
                session.received(data)
        except WebSocketDisconnect:
            pass
        finally:
            session.lost()
            link.close()  # what is queued (an Error saying why) still goes out, then the close
            with contextlib.suppress(asyncio.CancelledError, RuntimeError, OSError):
                await asyncio.wait_for(sender, 5)

    return Starlette(
        routes=[WebSocketRoute("/session", session_endpoint), *web.routes()], middleware=web.middleware()
    )


class _LingeringProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, except after a message past the WebSocket library's limit
    (uvicorn's ws_max_size, 16 MiB): uvicorn writes the 1009 close frame and closes the socket at
    once, and the rest of the message still arriving resets the connection and destroys that frame.
    Here the socket half-closes and lingers (`linger.py`) instead; the websockets parser already
    drops everything after a failure, so this only keeps reading until EOF or `linger_s`."""

    linger_s: ClassVar[float] = 30.0
    _lingering = False

    def handle_parser_exception(self) -> None:
        if self._lingering:  # called again for every chunk that follows: all dropped
            return
        self._lingering = True
        # What uvicorn's own does (websockets_sansio_impl.py), but the transport.close() at the end.
        assert self.conn.close_sent is not None
        close = self.conn.close_sent
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # EOF closes the transport (eof_received returns None); connection_lost cancels this.
        self.close_timer = self.loop.call_later(self.linger_s, self.transport.close)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `dmds serve` owns the signals and stops this server itself


class WebServer:
    """uvicorn serving `build_app` inside the running event loop."""

    def __init__(self, server: SessionServer) -> None:
        self._app = build_app(server)
        self._linger_s = server.linger_s
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, tls_cert: str = "", tls_key: str = "") -> int:
        """Listen on `port` (0: a free one), over TLS with `tls_cert`/`tls_key` (HTTPS and WSS)."""
        sock = socket.create_server((host, port), reuse_port=False)
        bound = int(sock.getsockname()[1])

        class Protocol(_LingeringProtocol):
            linger_s = self._linger_s

        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_level="warning",
            log_config=None,  # its records go through `dmds serve`'s handler and format (text or JSON)
            ws=Protocol,
            ssl_certfile=tls_cert or None,
            ssl_keyfile=tls_key or None,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        # uvicorn offers a flag, not an event, for "listening"
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raise why it did not start
        return bound

    @property
    def tls(self) -> ssl.SSLContext | None:
        """uvicorn's TLS context, if it serves HTTPS: a reload loads a renewed certificate into it."""
        return None if self._server is None else self._server.config.ssl

    @property
    def serving(self) -> bool:
        """uvicorn is up and has not stopped (readiness)."""
        server, task = self._server, self._task
        return server is not None and server.started and task is not None and not task.done()

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
