"""One session client's connection, whatever carries it (TCP, TLS or WebSocket): the session codec
bound to the core. Each connection is also the user's delivery `Endpoint` and, once subscribed, a
presence watcher.

Theory of operation
-------------------
Input: bytes go to the codec; each frame is handled in order. Requests that need the store run as
tasks (`session_requests.py`); the store keeps their order, so messages sent on one connection get
ids in the order sent. More than `MAX_IN_FLIGHT` unanswered requests pause reading (a flood costs
the flooder, not memory).

Output: frames are queued and written once per loop pass, all together (`call_soon(_flush)`): a burst
of pushes or answers costs one system call, not one per frame. A client that does not read lets the
kernel's and then the transport's buffer fill; past `max_outgoing_bytes` it is disconnected with
TOO_SLOW. Its messages were never acknowledged by it, so they are still stored and come again on its
next login.

Delivery: `deliver()` queues a Message frame and returns: the client's Ack, not the write, marks it
delivered (`confirms = True`). A second login of the same user takes over; the old connection is told
so (`replaced`) and closed.

Bad input over TCP: the Error frame is written, then the connection lingers (`linger.py`): the user
is offline at once, but the socket half-closes and reads and drops what the client still sends (the
rest of an oversized frame, say) until it closes, falls silent or `linger_s` pass, so that the close
does not reset the connection and destroy the Error before the client reads it. Over WebSocket a
message arrives whole before the codec sees it, so its Error needs no lingering; one past the
WebSocket library's own limit is refused by uvicorn, which `session_ws.py` makes linger too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from dmds.core.model import ItemKind, OutboxItem
from dmds.errors import DeliveryFailed, DmdsError, RateLimited
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode, code_for
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, RemoteProtocolError, Role, State
from dmds.transports.linger import Linger
from dmds.transports.session_grouping import grouped, pages
from dmds.transports.session_requests import answer, attachment_frame
from dmds.transports.session_sends import MAX_RUN, send_run

if TYPE_CHECKING:
    from dmds.transports.session_server import SessionServer

# The session server's records keep one logger name, which operators filter on (docs/operations.md).
log = logging.getLogger("dmds.transports.session_server")

#: Unanswered requests per connection before its reading is paused.
MAX_IN_FLIGHT = 1000


class Link(Protocol):
    """What a session connection needs from its transport. An asyncio.Transport is one; the
    WebSocket binding (`session_ws.py`) adapts a WebSocket to it."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class SessionConnection:
    """One client's session, whatever carries it: codec state, login, and the user's Endpoint."""

    confirms = True
    batches = True  # pushes are only queued: a page is one call
    # Slots: one of these per connected client, most of them idle (see `dmds bench connections`).
    __slots__ = (
        "__weakref__", "_flush_scheduled", "_in_flight", "_out", "_paused", "_stopping", "_typed",
        "alias", "codec", "history_lock", "loop", "opened_at", "peer", "server", "service", "subscribed",
        "token", "transport", "wants_goaway", "wants_ranges", "wants_typing",
    )  # fmt: skip

    def __init__(self, server: SessionServer, *, framed: bool = True) -> None:
        self.server = server
        self.service = server.service
        self.loop = asyncio.get_running_loop()
        s = server.settings
        self.codec = Connection(
            Role.SERVER,
            max_frame_bytes=s.max_frame_bytes,
            heartbeat_s=s.heartbeat_s,
            idle_timeout_s=s.idle_timeout_s,
            framed=framed,
            now=self.loop.time(),
        )
        self.transport: Link | None = None
        self.peer = "?"
        self.opened_at = self.loop.time()
        self.alias: str | None = None
        self.token = ""
        self.subscribed = False
        self._out: list[f.Frame] = []
        self._flush_scheduled = False
        self._in_flight = 0  # requests being served (their tasks are held by the server)
        self.history_lock: asyncio.Lock | None = None  # made on the first History
        self._paused = False
        self._stopping = False  # the server is stopping: read nothing more
        self.wants_typing = False  # asked for TypingFrom pushes in Hello.features
        self.wants_goaway = False  # asked for a GoAway push before a stop (version 2)
        self.wants_ranges = False  # asked for receipt ranges (version 2)
        self._typed: dict[str, float] | None = None  # recipient -> when this client last typed to them

    # -- the link's events ---------------------------------------------------------------------------

    def opened(self, link: Link, peer: str) -> bool:
        """The link is up; False if it must be refused (stopping, or too many sessions)."""
        self.transport, self.peer = link, peer
        if self.server.stopping:
            log.info("stopping; refusing a session connection from %s", peer)
            link.abort()
            return False
        if len(self.server.connections) >= self.server.settings.max_sessions:
            log.warning(
                "session connections at max_sessions (%d); refusing %s", len(self.server.connections), peer
            )
            link.abort()
            return False
        self.server.connections.add(self)
        return True

    def received(self, data: bytes) -> None:
        """Bytes (TCP) or one message (WebSocket); b"" at EOF."""
        if self.codec.state is State.CLOSED:
            linger = self.server.lingering.get(self)
            if linger is not None:
                linger.received(len(data), self.loop.time())  # and dropped
            return
        self.codec.receive_data(data, self.loop.time())
        self._drain()

    def lost(self) -> None:
        self.server.connections.discard(self)
        self.server.lingering.pop(self, None)
        self.codec.close()
        self._forget()

    def _forget(self) -> None:
        """The user is offline on this connection: no more presence, no more deliveries."""
        if self.subscribed:
            self.subscribed = False
            self.service.unsubscribe(self)
        if self.alias is not None:
            alias, self.alias = self.alias, None
            # Only this connection's presence: a newer login of the same user stays.
            self._spawn(self.service.disconnect(alias, endpoint=self))

    def too_slow(self) -> None:
        # The client reads slower than we write, past max_outgoing_bytes: cut it off. What it did
        # not acknowledge stays stored for its next login.
        log.info(
            "session %s (%s) does not read its frames; disconnecting",
            self.alias,
            self.peer,
            extra={"alias": self.alias, "peer": self.peer},
        )
        if self.transport is not None:
            self.transport.abort()

    # -- input --------------------------------------------------------------------------------------

    def _drain(self) -> None:
        # Sends that arrive together (a pipelining client) go to the core as one run.
        run: list[f.Send] = []
        codec = self.codec
        try:
            while True:
                # The frames buffered, in one call; what they stop at, one call at a time.
                for frame in codec.next_events() or [codec.next_event()]:
                    if type(frame) is f.Send and self.alias is not None and not frame.attachment:
                        run.append(frame)
                        if len(run) >= MAX_RUN:
                            send_run(self, run)
                            run = []
                        continue
                    if run:
                        send_run(self, run)
                        run = []
                    if frame is None:
                        return  # nothing more until more bytes come
                    if frame is CLOSED_EVENT:
                        if self.transport is not None:
                            self.transport.close()
                        return
                    self._handle(frame)
                    if codec.state is State.CLOSED:
                        return  # closed by that frame: what follows it is not read
        except RemoteProtocolError as exc:
            if run:
                send_run(self, run)  # they came before the bad frame, as they would have one by one
            log.info(
                "session from %s broke the protocol (%s); closing",
                self.peer,
                exc.message,
                extra={"alias": self.alias, "peer": self.peer, "code": exc.code.name},
            )
            self.close(exc.code, exc.message, linger=True)

    def _handle(self, frame: Any) -> None:
        if isinstance(frame, f.Hello):
            s = self.server.settings
            self.wants_typing = f.TYPING in frame.features
            self.wants_ranges = f.RECEIPT_RANGES in frame.features and self.codec.version >= 2
            self.wants_goaway = f.GOAWAY in frame.features and self.codec.version >= 2
            self.queue(
                f.Welcome(
                    version=self.codec.version,
                    server="dmds",
                    heartbeat_s=s.heartbeat_s,
                    idle_timeout_s=s.idle_timeout_s,
                    max_frame_bytes=s.max_frame_bytes,
                    max_text_bytes=self.server.max_text_bytes,
                    max_attachment_bytes=self.server.delivery.max_attachment_bytes,
                )
            )
        elif isinstance(frame, f.Ping):
            self.queue(f.Pong(n=frame.n))
        elif isinstance(frame, f.Pong):
            pass  # receiving it already counted as activity
        elif isinstance(frame, f.Ack | f.MarkRead):
            if self.alias is not None and frame.message_ids:
                kind = ItemKind.DELIVERED if isinstance(frame, f.Ack) else ItemKind.READ
                self.service.settle_soon(self.alias, list(frame.message_ids), kind)
        elif isinstance(frame, f.Typing):
            self._typing(frame.to)
        else:
            self._spawn(self._request(frame))

    def _typing(self, to: str) -> None:
        """Pass a typing notice on, at most one per `typing_interval_s` per recipient; the rest, and
        any before login, are dropped without an answer (they are ephemeral)."""
        if self.alias is None:
            return
        if self._typed is None:
            self._typed = {}
        now = self.loop.time()
        if now - self._typed.get(to, -1e9) < self.server.settings.typing_interval_s:
            return
        if len(self._typed) >= 64:  # recipients of long ago; keeps this bounded per connection
            self._typed.clear()
        self._typed[to] = now
        self.service.typing(self.alias, to)

    def error_frame(self, frame: Any, exc: BaseException) -> f.Error:
        """The Error frame answering `frame` that failed with `exc`: the one place codes are applied."""
        if isinstance(exc, DmdsError):
            code = code_for(exc)
            retry = exc.retry_after_s if isinstance(exc, RateLimited) else 0.0
            log.debug("session %s: %s failed: %s", self.alias or self.peer, type(frame).__name__, exc)
            return f.Error(code=code, message=str(exc) or code.name, re=frame.id, retry_after_s=retry)
        log.error("bug while serving %s from %s", type(frame).__name__, self.alias or self.peer, exc_info=exc)
        return f.Error(code=code_for(exc), message="internal error", re=frame.id)

    async def _request(self, frame: Any) -> None:
        started = self.loop.time()
        try:
            reply = await answer(self, frame)
        except Exception as exc:  # noqa: BLE001 - answered; `error_frame` logs whatever is not a domain error
            reply = self.error_frame(frame, exc)
        if (metrics := self.service.metrics) is not None:
            metrics.request("session", type(frame).__name__).observe(self.loop.time() - started)
        self.queue(reply)

    async def leave(self) -> None:
        if self.subscribed:  # presence is for logged-in users
            self.subscribed = False
            self.service.unsubscribe(self)
        if self.alias is not None:
            alias, self.alias = self.alias, None
            await self.service.disconnect(alias, endpoint=self)

    def closing(self) -> bool:
        # A CLOSED codec with an open transport: lingering after an Error.
        return self.transport is None or self.transport.is_closing() or self.codec.state is State.CLOSED

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.server.tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._task_done)
        self.begin_requests()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.server.tasks.discard(task)
        self.end_requests()

    def begin_requests(self, count: int = 1) -> None:
        """`count` more requests being served; past MAX_IN_FLIGHT the connection stops reading."""
        self._in_flight += count
        if self._in_flight >= MAX_IN_FLIGHT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def going_away(self) -> None:
        """The server is stopping: no more requests are read (those unread are the client's to send
        again, elsewhere or later); those in flight are answered."""
        self._stopping = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            if self.wants_goaway:
                self.queue(f.GoAway(reason="server stopping"))

    def end_requests(self, count: int = 1) -> None:
        self._in_flight -= count
        if self._stopping:
            return
        if self._paused and self._in_flight < MAX_IN_FLIGHT // 2 and self.transport is not None:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- output -------------------------------------------------------------------------------------

    def queue(self, frame: f.Frame) -> None:
        if self.codec.state is State.CLOSED and not isinstance(frame, f.Error):
            return
        self._out.append(frame)
        self._flush_soon()

    def queue_many(self, frames: list[f.Frame]) -> None:
        """`queue` for each of `frames`, in order."""
        if self.codec.state is State.CLOSED:
            frames = [frame for frame in frames if isinstance(frame, f.Error)]
        if frames:
            self._out += frames
            self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is None or self.transport.is_closing() or not out:
            return
        if self.codec.state is State.CLOSED and self in self.server.lingering:
            return  # half-closed: the Error was the last frame
        now = self.loop.time()
        if self.codec.version >= 2 and len(out) > 1:
            out = grouped(out, self._page_budget)
        if self.codec.framed:
            self.transport.write(self.codec.send_many(out, now))
        else:  # WebSocket: one message per frame
            for frame in out:
                self.transport.write(self.codec.send(frame, now))

    def close(self, code: ErrorCode, message: str, *, linger: bool = False) -> None:
        """Say why in an Error frame, then close; with `linger` (bad input: the client may still be
        sending), the lingering way."""
        self.codec.close()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self in self.server.lingering:
            transport.close()  # the Error went already; stop lingering
            return
        self._out.append(f.Error(code=code, message=message))
        self._flush()
        if not (linger and self.codec.framed):
            transport.close()
            return
        self._forget()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the Error, then EOF
        self.server.lingering[self] = Linger(
            self.loop.time(), self.server.linger_s, self.server.linger_idle_s
        )

    def linger_over(self, linger: Linger, now: float) -> None:
        """The sweep found `linger` expired: close, even if the client is still sending."""
        self.server.lingering.pop(self, None)
        if linger.cut_off(now):
            log.info(
                "session client %s still sending after %gs (%d bytes dropped since its Error); "
                "closing (linger_s)",
                self.peer,
                self.server.linger_s,
                linger.dropped,
                extra={"peer": self.peer, "dropped": linger.dropped},
            )
        if self.transport is not None:
            # An Error the client has not even read would hold a close() open for ever.
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()

    def tick(self, now: float) -> None:
        if (
            self.codec.state is State.HANDSHAKE
            and now - self.opened_at > self.server.settings.handshake_timeout_s
        ):
            # A connection that never says Hello holds a slot for nothing: shorter than idleness.
            log.info(
                "session from %s: no Hello within handshake_timeout_s; closing",
                self.peer,
                extra={"peer": self.peer},
            )
            self.close(ErrorCode.IDLE_TIMEOUT, "no hello")
            return
        due = self.codec.get_timer()
        if due is None or now < due:
            return
        try:
            data = self.codec.handle_timer(now)
        except RemoteProtocolError as exc:
            log.info("session %s (%s): %s; closing", self.alias, self.peer, exc.message)
            self.close(exc.code, exc.message)
            return
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- Endpoint and PresenceWatcher ------------------------------------------------------------------

    def describe(self) -> str:
        return f"session {self.peer}"

    async def deliver(self, item: OutboxItem) -> None:
        self.deliver_batch([item])

    def deliver_batch(self, items: list[OutboxItem]) -> None:
        if self.closing():
            raise DeliveryFailed("session connection closed")
        message, Message = ItemKind.MESSAGE, f.Message
        run: list[f.Message] = []
        for item in items:
            if item.kind is message:
                # Positional, and the attachment looked at only when there is one: a drain's page
                # is a thousand of these.
                att = item.attachment
                run.append(
                    Message(item.peer, item.message_id, item.text, item.sent_at)
                    if att is None
                    else Message(item.peer, item.message_id, item.text, item.sent_at, attachment_frame(att))
                )
                continue
            if run:
                self._queue_messages(run)
                run = []
            self._receipt(item)
        if run:
            self._queue_messages(run)

    def _queue_messages(self, run: list[f.Message]) -> None:
        # A drain's page grouped here, once, rather than queued frame by frame and regrouped by
        # `_flush` (about a third of a microsecond per message on the drain).
        for frame in pages(run, self._page_budget) if self.codec.version >= 2 else run:
            self.queue(frame)

    @property
    def _page_budget(self) -> int:
        # Half the frame limit: the byte count of a page is an estimate (see session_grouping).
        return self.server.settings.max_frame_bytes // 2

    def _receipt(self, item: OutboxItem) -> None:
        if item.kind is ItemKind.DELIVERED:
            receipts = item.receipts
            if len(receipts) > 1 and self.wants_ranges:
                # A range is every message of the sender's to the peer in it (delivered in order).
                (first, _), (last, key) = receipts[0], receipts[-1]
                self.queue(f.Delivered(to=item.peer, message_id=last, key=key, first=first))
            else:
                for message_id, key in receipts:
                    self.queue(f.Delivered(to=item.peer, message_id=message_id, key=key))
        else:
            for message_id, key in item.receipts:
                self.queue(f.Read(to=item.peer, message_id=message_id, key=key))

    def replaced(self) -> None:
        self.alias = None  # the newer connection owns the presence now
        self.close(ErrorCode.ALREADY_LOGGED_IN, "logged in again elsewhere")

    def kicked(self, reason: DmdsError) -> None:
        self.alias = None  # the core took the user offline already
        log.info("session %s: closed by the operator (%s)", self.peer, reason)
        self.close(code_for(reason), str(reason))

    def presence_changed(self, alias: str, online: bool) -> None:
        self.queue(f.PresenceChanged(alias=alias, online=online))

    def typing(self, sender: str) -> None:
        if self.wants_typing:
            self.queue(f.TypingFrom(sender=sender))
