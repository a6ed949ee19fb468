"""The classic server: one asyncio.Protocol per connection, binding the classic codec to the core.

Each connection carries one request. Bytes go into `ServerConnection`; once it yields a request, the
service is called, the reply's bytes are written and the connection closed. A peer mistake (codec
error or request timeout) gets the operation's "other error" reply; then, classic.md, the server
half-closes and lingers (`linger.py`): it reads and drops what the client still sends until the
client closes, falls silent or `linger_s` pass, so that closing does not reset the connection and
destroy the reply before the client has read it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any, cast

from dmds.core.service import Service
from dmds.errors import DmdsError, Forbidden, InvalidField, LimitExceeded, StoreError
from dmds.protocols import proxy
from dmds.protocols.classic import (
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    Register,
    RemoteProtocolError,
    Reply,
    Request,
    Send,
    SendReply,
    ServerConnection,
    Unregister,
)
from dmds.protocols.classic.codes import OK, error_reply
from dmds.settings import ClassicLimits, DeliverySettings
from dmds.transports.classic_pusher import ClassicEndpoint
from dmds.transports.linger import Linger

log = logging.getLogger(__name__)

#: How often deadlines (request timeouts, lingering closes) are checked, in seconds.
SWEEP_S = 0.1
#: Seconds between two looks at the connections still open while stopping.
STOP_POLL_S = 0.01

# Errors that are the client's doing (or a limit): logged at INFO, without a traceback.
_EXPECTED = (DmdsError,)


class _State(enum.Enum):
    READING = enum.auto()
    DISPATCHING = enum.auto()
    LINGERING = enum.auto()
    CLOSED = enum.auto()


class ClassicServer:
    """Serves the classic protocol on one listening socket."""

    def __init__(self, service: Service, limits: ClassicLimits, delivery: DeliverySettings) -> None:
        self.service = service
        self.limits = limits
        self.delivery = delivery
        self.active = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused_logged = False
        #: connections with a deadline (reading a request, or lingering after an error reply)
        self.watched: set[_ClassicProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None
        service.classic_endpoint = self.endpoint_at

    def endpoint_at(self, address: str) -> ClassicEndpoint:
        """The listener at `address` (host:port, as `ClassicEndpoint.describe` writes it): how a
        node reaches a classic user it takes over from a dead one."""
        host, _, port = address.rpartition(":")
        return ClassicEndpoint(host, int(port), self.delivery)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClassicProtocol(self), host, port, backlog=1024)
        self._sweeper = loop.create_task(self._sweep())
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    @property
    def serving(self) -> bool:
        """The listening socket accepts connections (readiness)."""
        return self._server is not None and self._server.is_serving()

    async def _sweep(self) -> None:
        # One periodic pass instead of a timer per connection: timers cost more than the rest of a
        # short request. Deadlines are thus enforced to within SWEEP_S.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for conn in [c for c in self.watched if c.deadline <= now]:
                conn.timed_out()

    async def stop(self, deadline: float) -> None:
        """The graceful part of a stop: accept no more connections and wait until every open one
        is answered, or the loop's clock passes `deadline`; then end the lingering ones (answered
        already: their clients have had their reply). `close` follows."""
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        while self._unanswered() and loop.time() < deadline:  # noqa: ASYNC110 - an event would cost every request
            await asyncio.sleep(STOP_POLL_S)
        if waiting := self._unanswered():
            log.warning("stopping with %d classic request(s) still unanswered", waiting)
        for conn in [c for c in self.watched if c.lingering]:
            conn.end_linger()

    def _unanswered(self) -> int:
        return self.active - sum(1 for conn in self.watched if conn.lingering)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refuse_logged_once(self) -> bool:
        """True the first time connections are refused in a burst (the log says it once)."""
        first = not self._refused_logged
        self._refused_logged = True
        return first

    def accept_again(self) -> None:
        self._refused_logged = False

    async def dispatch(self, request: Request, conn: _ClassicProtocol) -> Reply:
        svc = self.service
        if isinstance(request, Send):
            item = await svc.send(request.sender, request.recipient, request.text, classic=True)
            return SendReply(OK, item.message_id)
        # REGISTER never comes here: `_ClassicProtocol._advance` answers it without a task.
        if isinstance(request, Connect):
            # classic.md: pushes go to the address the CONNECT came from.
            host = conn.peer[0] if conn.peer else "127.0.0.1"
            endpoint = ClassicEndpoint(host, request.listen_port, self.delivery)
            await svc.connect(request.alias, endpoint, classic=True)
        elif isinstance(request, ConnectedUsers):
            return ConnectedUsersReply(OK, tuple(await svc.connected_users(request.alias)))
        elif isinstance(request, Disconnect):
            await svc.disconnect(request.alias, classic=True)
        elif isinstance(request, Unregister):
            await svc.unregister(request.alias, classic=True)
        else:  # pragma: no cover - the codec yields only the requests above
            raise TypeError(f"unexpected request {request!r}")
        return Reply(OK)


class _ClassicProtocol(asyncio.Protocol):
    __slots__ = (
        "_client",
        "_codec",
        "_eof",
        "_extra",
        "_linger",
        "_proxy",
        "_server",
        "_state",
        "_transport",
        "deadline",
    )

    def __init__(self, server: ClassicServer) -> None:
        self._server = server
        limits = server.limits
        self._codec = ServerConnection(limits.max_field_bytes, limits.max_text_bytes)
        self._state = _State.READING
        self._transport: asyncio.Transport | None = None
        self.deadline = 0.0
        self._eof = False
        self._extra = False  # bytes came after the request: the client may still be sending
        self._linger: Linger | None = None
        #: behind a balancer speaking the PROXY protocol: the header's bytes until it is complete
        self._proxy: bytes | None = b"" if server.limits.proxy_protocol else None
        self._client: tuple[str, int] | None = None

    # -- asyncio callbacks -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        if server.active >= server.limits.max_connections:
            if server.refuse_logged_once():
                log.warning(
                    "%d classic connections open (max_connections); refusing new ones until some close",
                    server.active,
                )
            self._state = _State.CLOSED
            self._transport.abort()
            return
        server.active += 1
        self._watch(server.limits.request_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None and self._state is _State.READING:
            data = self._proxy_header(data)
            if not data:
                return
        if self._state is _State.READING:
            self._codec.receive_data(data)
            self._advance()
        elif self._state is _State.LINGERING:
            assert self._linger is not None
            self._linger.received(len(data), asyncio.get_running_loop().time())
            self.deadline = self._linger.deadline
        else:
            # DISPATCHING: the request is complete; anything more is not part of the protocol, but
            # the reply must then close the lingering way too.
            self._extra = True

    def eof_received(self) -> bool:
        self._eof = True
        if self._state is _State.READING:
            self._codec.receive_data(b"")
            self._advance()
            return True  # keep our side open to write the reply
        if self._state is _State.LINGERING:
            self._finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state is not _State.CLOSED:
            self._unwatch()
            self._server.active -= 1
            if self._server.active < self._server.limits.max_connections:
                self._server.accept_again()
            # A request being dispatched still completes: a SEND committed is delivered.
            self._state = _State.CLOSED

    # -- the exchange -------------------------------------------------------------------------------------

    def _advance(self) -> None:
        try:
            request = self._codec.next_event()
        except RemoteProtocolError as exc:
            self._reject(exc.op, exc.reason)
            return
        if request is None:
            return
        self._unwatch()
        self._state = _State.DISPATCHING
        if isinstance(request, Register):
            # The hot path of the benchmark and of every new user: no task, only the store's
            # future and a callback.
            try:
                stored = asyncio.ensure_future(
                    self._server.service.register_nowait(request.full_name, request.alias, request.birth_date)
                )
            except Exception as exc:  # noqa: BLE001 - answered; `_failed` logs what is not a domain error
                self._answer(self._failed(request, exc))
                return
            started = time.perf_counter() if self._server.service.metrics is not None else 0.0
            stored.add_done_callback(lambda fut: self._registered(request, fut, started))
            return
        task = asyncio.get_running_loop().create_task(self._dispatch(request))
        self._server.track(task)

    def _registered(self, request: Register, fut: asyncio.Future[None], started: float) -> None:
        if fut.cancelled():
            return
        if (metrics := self._server.service.metrics) is not None:
            metrics.request("classic", "REGISTER").observe(time.perf_counter() - started)
        exc = fut.exception()
        self._answer(Reply(OK) if exc is None else self._failed(request, exc))

    def _proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY line off the front of the stream; returns what follows it."""
        assert self._proxy is not None
        buffer = self._proxy + data
        try:
            parsed = proxy.parse(buffer)
        except proxy.ProxyHeaderError as exc:
            log.warning("classic connection without a valid PROXY header (proxy_protocol is on): %s", exc)
            if self._transport is not None:
                self._transport.abort()
            return b""
        if parsed is None:
            self._proxy = buffer
            return b""
        self._client, used = parsed
        self._proxy = None
        return buffer[used:]

    @property
    def peer(self) -> Any:
        """The client's (host, port): from the PROXY header behind a balancer, else the socket's."""
        if self._client is not None:
            return self._client
        # Asked for only when needed: getpeername() is a system call per connection.
        return self._transport.get_extra_info("peername") if self._transport is not None else None

    @property
    def peer_text(self) -> str:
        """The peer as host:port, for structured logs."""
        peer = self.peer
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def _dispatch(self, request: Request) -> None:
        started = time.perf_counter()
        try:
            reply = await self._server.dispatch(request, self)
        except Exception as exc:  # noqa: BLE001 - answered; `_failed` logs what is not a domain error
            reply = self._failed(request, exc)
        if (metrics := self._server.service.metrics) is not None:
            metrics.request("classic", request.OP.decode()).observe(time.perf_counter() - started)
        self._answer(reply)

    def _failed(self, request: Request, exc: BaseException) -> Reply:
        """The reply to a request that failed with `exc` (codes.error_reply: the one table)."""
        name = request.OP.decode()
        if isinstance(exc, InvalidField | LimitExceeded | StoreError | Forbidden):
            peer = self.peer_text
            extra = {"op": name, "peer": peer, "reason": type(exc).__name__}
            log.info("%s from %s failed: %s", name, peer, exc, extra=extra)
        elif isinstance(exc, _EXPECTED):
            log.debug("%s from %s: %s", name, self.peer_text, type(exc).__name__)
        else:
            log.error("bug while serving %s from %s", name, self.peer_text, exc_info=exc)
        return error_reply(type(request), exc)

    def _answer(self, reply: Reply) -> None:
        if self._state is _State.CLOSED or self._transport is None:
            return
        self._transport.write(self._codec.send(reply))
        if self._extra and not self._eof:
            self._linger_after_reply()
        else:
            self._finish()

    def timed_out(self) -> None:
        self._unwatch()
        if self._state is _State.READING:
            self._reject(
                self._codec.op, f"request not complete within {self._server.limits.request_timeout_s}s"
            )
        elif self._state is _State.LINGERING:
            linger = self._linger
            assert linger is not None
            if linger.cut_off(asyncio.get_running_loop().time()):
                log.info(
                    "classic client %s still sending after %gs (%d bytes dropped since its error "
                    "reply); closing (linger_s)",
                    self.peer_text,
                    self._server.limits.linger_s,
                    linger.dropped,
                    extra={"peer": self.peer_text, "dropped": linger.dropped},
                )
            self._finish(give_up=True)

    def _reject(self, op: type[Request] | None, reason: str) -> None:
        name = op.OP.decode() if op is not None else "request"
        log.info(
            "bad %s from %s: %s; answering other error and closing",
            name,
            self.peer_text,
            reason,
            extra={"op": name, "peer": self.peer_text},
        )
        assert self._transport is not None
        self._transport.write(self._codec.send(error_reply(op, RemoteProtocolError(reason, op))))
        self._codec.close()  # what it buffered is not needed any more
        self._unwatch()
        if self._eof:
            self._finish()  # the client has sent all it will: nothing to linger for
            return
        self._linger_after_reply()

    def _linger_after_reply(self) -> None:
        assert self._transport is not None
        if self._transport.can_write_eof():
            self._transport.write_eof()  # the client reads the reply, then EOF
        limits = self._server.limits
        self._linger = Linger(asyncio.get_running_loop().time(), limits.linger_s, limits.linger_idle_s)
        self._state = _State.LINGERING
        self.deadline = self._linger.deadline
        self._server.watched.add(self)

    @property
    def lingering(self) -> bool:
        return self._state is _State.LINGERING

    def end_linger(self) -> None:
        """The server is stopping: the reply was sent, stop waiting for the client to finish."""
        self._finish(give_up=True)

    def _finish(self, *, give_up: bool = False) -> None:
        """Close once what is written has gone; with `give_up` (the linger is over), at once if the
        client has not even read that: it would hold a close() open for ever."""
        self._unwatch()
        transport = self._transport
        if transport is not None:
            if give_up and transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def _watch(self, timeout_s: float) -> None:
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self._server.watched.add(self)

    def _unwatch(self) -> None:
        self._server.watched.discard(self)
