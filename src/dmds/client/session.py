"""Asyncio client of the session protocol: one persistent connection, MessagePack frames.

Use
---
::

    client = await SessionClient.connect("127.0.0.1", 7001, reconnect=True)
    await client.login("juan", "secret password")
    await client.subscribe()                      # presence: who is online, then changes
    accepted = await client.send("maria", "hola") # returns once the message is durable
    async for event in client.events():           # Message, Delivered, Read, PresenceChanged...
        if isinstance(event, Message):
            await client.mark_read([event.message_id])
    await client.close()

Every request method returns the server's answer, raises `SessionError` (with the protocol's
`ErrorCode`) when the server answered with an Error, `ValueError` when the request breaks a limit the
server announced in Welcome (text too long, attachment too large) or a field's bounds (empty alias...)
and so was never sent, and `ConnectionLost` when the connection went away before the answer came (and
was not recovered, see below).

Events
------
What the server pushes (`Message`, `Delivered`, `Read`, `PresenceChanged`, the protocol's frames
re-exported here) and what happens to the connection (`Disconnected`, `Reconnected`) are events. They
go one of two ways, chosen once at `connect`:

- with `on_event=callback`, each event is passed to the callback, in the event loop, in the order it
  arrived, as soon as it arrived. The callback must not block; it may start tasks.
- without, each event is put in a queue that `async for event in client.events()` reads. The
  iteration ends when the client is closed or its connection is lost for good.

A `Message` is acknowledged to the server (an Ack frame, which makes it count as delivered and sends
the sender its `Delivered` receipt) once it has been handed to the application: after the callback
returned, or once it is in the queue. The Acks of one loop pass travel as one Ack frame. A message
the server pushes again (its Ack was lost with a connection) is acknowledged again but not handed to
the application twice.

Theory of operation
-------------------
I/O. The connection is an `asyncio.Protocol` (`_Link`) that feeds every chunk it reads to the
sans-I/O codec (`protocols.session.connection`) and handles each frame the codec decodes. Frames to
send are queued and written once per loop pass (`call_soon`), all together: a burst of requests or
acknowledgements costs one write. When the transport's buffer is full, new requests wait for it to
drain. The codec's timer (`get_timer`/`handle_timer`) runs on a loop timer: it sends a Ping after
`heartbeat_s` of silence and declares the server gone after `idle_timeout_s` without a frame from it
(both from Welcome). The server's Pings are answered with Pong.

Requests. Each request carries a fresh id; its future waits in `_pending`, keyed by id, until the
frame with that id in `re` arrives (the answer, or an Error).

Reconnection (``reconnect=True``). When the connection drops (not when the client closes it, and
not when the server said it must not come back: replaced by a newer login, protocol errors), or
the server says it is stopping (`GoAway`, which the client asks for in Hello; then the first
attempt is made at once, to the next address first):

1. Requests that may safely be sent twice stay pending: `Send` (its key makes the server answer a
   resend with the id of the first and never deliver it twice), `History` and `Fetch` (reads). Every
   other request in flight fails with `ConnectionLost`: whether it took effect is unknown, and
   repeating it is not harmless (a chunk of an upload, a login...). Acks and MarkReads not yet
   written are kept to be written later. Requests made while reconnecting wait, unsent.
2. The client reconnects, after a backoff that doubles from `RECONNECT_FIRST_DELAY_S` up to
   `RECONNECT_MAX_DELAY_S` (with jitter), at most `RECONNECT_ATTEMPTS` times, to `host` and `port`
   as they are at each attempt: a program may point them at another server meanwhile. With
   `alternates` (the other nodes of a cluster) each attempt tries the addresses in turn, the next
   one first: a node that died is left at once for one that is up.
3. On the new connection (Hello/Welcome), it logs in again with its token (`Login(token=...)`) if it
   was logged in, and subscribes again if it was subscribed: the `Presence` answer is compared with
   what it knew and the differences become `PresenceChanged` events.
4. Then it writes every pending request, in the order they were first made, with their original
   keys: a Send the server had committed before the drop is answered `Accepted` with the same id, one
   it never saw is committed now. Their `send()` calls return normally. A `Reconnected` event follows.

If every attempt fails, or the token is refused (revoked: logged out elsewhere, password changed;
expired), the client gives up: pending requests fail with `ConnectionLost`, a `Disconnected` event
with ``reconnecting=False`` ends the events, and the client is closed. No accepted message is lost
either way: `Accepted` is only ever given for a message the server has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl as _ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeAlias, TypeVar, cast

import msgspec

from dmds import __version__
from dmds.client.oserrors import os_reason
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import (
    CLOSED_EVENT,
    Connection,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
)
from dmds.protocols.session.frames import (
    Accepted,
    Attachment,
    Delivered,
    HistoryEntry,
    HistoryPage,
    Message,
    PresenceChanged,
    Read,
    Welcome,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_PORT",
    "ERROR_TEXT",
    "RECONNECT_ATTEMPTS",
    "RECONNECT_FIRST_DELAY_S",
    "RECONNECT_MAX_DELAY_S",
    "Accepted",
    "Attachment",
    "ConnectionLost",
    "Delivered",
    "Disconnected",
    "Event",
    "HistoryEntry",
    "HistoryPage",
    "Message",
    "PresenceChanged",
    "Read",
    "Reconnected",
    "SessionClient",
    "SessionClientError",
    "SessionError",
    "Welcome",
    "describe_error",
]

log = logging.getLogger(__name__)

#: The session protocol's usual port (`dmds serve --session-port`).
DEFAULT_PORT: Final = 7001
#: Bound on opening a connection: TCP (and TLS) connect, then Hello/Welcome.
CONNECT_TIMEOUT_S: Final = 10.0
#: How long `close()` waits for the server to see the connection closed before aborting it.
CLOSE_TIMEOUT_S: Final = 2.0
#: Reconnection: attempts after a drop before giving up...
RECONNECT_ATTEMPTS: Final = 8
#: ...waiting this long before the first, doubling each time...
RECONNECT_FIRST_DELAY_S: Final = 0.1
#: ...up to this long (each wait is shortened by a random jitter of up to half).
RECONNECT_MAX_DELAY_S: Final = 3.0
#: Bytes of an attachment per UploadChunk (less if the server's max_frame_bytes requires).
UPLOAD_CHUNK_BYTES: Final = 256 * 1024
#: Bytes asked for per Fetch (the server answers at most 256 KiB).
FETCH_CHUNK_BYTES: Final = 256 * 1024
#: Room left in a frame for the fields of an UploadChunk other than its data.
FRAME_OVERHEAD_BYTES: Final = 1024
#: Largest frame accepted from the server: above any Message or Chunk a sane server sends.
MAX_INCOMING_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Message ids remembered as already handed to the application (a re-pushed one is not handed again).
SEEN_WINDOW: Final = 10_000
#: Program name sent in Hello.
CLIENT_NAME: Final = f"dmds-python/{__version__}"

_MAX_REQUEST_ID: Final = 2**32 - 1
_TIMER_SLACK_S: Final = 0.005
#: Requests that are safe to send again on a new connection (see the module docstring).
_REPLAYABLE: Final = (f.Send, f.History, f.Fetch)
#: Error codes with which the server closes a connection that must not simply be reopened.
_FINAL_CODES: Final = frozenset(
    {
        ErrorCode.ALREADY_LOGGED_IN,
        ErrorCode.BAD_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.BLOCKED,
        ErrorCode.KICKED,
    }
)
#: Codes whose Error message from the server adds to the text of ERROR_TEXT.
_DETAILED: Final = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.INVALID_FIELD,
        ErrorCode.LIMIT_EXCEEDED,
        ErrorCode.UNKNOWN_USER,
        ErrorCode.ALREADY_LOGGED_IN,
    }
)

#: The human text of every session ErrorCode.
ERROR_TEXT: Final[dict[ErrorCode, str]] = {
    ErrorCode.BAD_FRAME: "the server did not understand a frame",
    ErrorCode.FRAME_TOO_LARGE: "a frame was larger than the server accepts",
    ErrorCode.UNSUPPORTED_VERSION: "the server does not speak this protocol version",
    ErrorCode.NOT_LOGGED_IN: "not logged in",
    ErrorCode.BAD_CREDENTIALS: "wrong alias or password",
    ErrorCode.RATE_LIMITED: "too many failed attempts",
    ErrorCode.BAD_TOKEN: "the session expired or was ended elsewhere; log in with the password",
    ErrorCode.ALIAS_TAKEN: "alias already taken",
    ErrorCode.UNKNOWN_USER: "no such user",
    ErrorCode.INVALID_FIELD: "invalid value",
    ErrorCode.LIMIT_EXCEEDED: "limit reached",
    ErrorCode.ALREADY_LOGGED_IN: "already logged in",
    ErrorCode.UNKNOWN_ATTACHMENT: "no such attachment",
    ErrorCode.INTERNAL: "server error; try again",
    ErrorCode.IDLE_TIMEOUT: "the connection was idle for too long",
    ErrorCode.TOO_SLOW: "the client did not read fast enough",
    ErrorCode.BLOCKED: "this alias is blocked by the server's operator",
    ErrorCode.KICKED: "disconnected by the server's operator",
}


def parse_servers(text: str, default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Addresses as people write them: ``host``, ``host:port``, ``[v6]:port``, comma-separated (the
    nodes of a cluster). Raises ValueError for an empty list or a port that is not one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, port = part, default_port
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif part.count(":") == 1:
            host, _, number = part.partition(":")
            port = int(number)
        if not host or not 0 < port < 65536:
            raise ValueError(f"not a server address: {part!r}")
        out.append((host, port))
    if not out:
        raise ValueError("no server address given")
    return out


def describe_error(code: ErrorCode, message: str = "", retry_after_s: float = 0.0) -> str:
    """The human text of an Error frame: ERROR_TEXT, with the server's details where they help."""
    text = ERROR_TEXT.get(code, f"error {int(code)}")
    if code is ErrorCode.RATE_LIMITED and retry_after_s > 0:
        return f"{text}; try again in {retry_after_s:.0f} s"
    if code in _DETAILED and message and message != code.name:
        return message if message.startswith(text) else f"{text}: {message}"
    return text


class SessionClientError(Exception):
    """Base of the errors of this module."""


class SessionError(SessionClientError):
    """The server answered a request with an Error frame."""

    def __init__(self, code: ErrorCode, message: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(describe_error(code, message, retry_after_s))
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class ConnectionLost(SessionClientError, ConnectionError):
    """The connection went away (or the client was closed) before the request was answered."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """Event: the connection dropped. With `reconnecting` the client is getting it back; without,
    the client is closed and this is the last event."""

    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Event: the connection is back, the session resumed and pending requests sent again."""


Event: TypeAlias = Message | Delivered | Read | PresenceChanged | Disconnected | Reconnected
EventCallback: TypeAlias = Callable[[Event], None]
_F = TypeVar("_F", bound=f.Frame)


def _expect(answer: f.Frame, kind: type[_F]) -> _F:
    if not isinstance(answer, kind):
        raise SessionClientError(f"unexpected answer {type(answer).__name__}; expected {kind.__name__}")
    return answer


def _validate(frame: f.Frame) -> None:
    """ValueError if `frame` breaks a bound of its fields (the server would close the connection)."""
    try:
        msgspec.msgpack.decode(msgspec.msgpack.encode(frame), type=type(frame))
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {type(frame).__name__}: {exc}") from None


@dataclass(eq=False, slots=True)
class _Request:
    frame: Any  # a request frame: it has `id`
    future: asyncio.Future[f.Frame]
    sent_on: _Link | None = None


class _Link(asyncio.Protocol):
    """One connection (TCP or TLS): its codec, its transport, its output written once per loop pass."""

    def __init__(self, client: SessionClient) -> None:
        self._client = client
        self._loop = client._loop
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

    # -- asyncio callbacks --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.queue(f.Hello(version=f.VERSION, client=self._client.client_name, features=[f.GOAWAY]))
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
        self._client._link_lost(self)

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
                self._client._on_frame(self, frame)
        except RemoteProtocolError as exc:
            self.reason = f"the server broke the protocol ({exc.message})"
            self.final = True
            self.abort()

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


class SessionClient:
    """A client of a dmds session server. Make one with `await SessionClient.connect(...)`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        client_name: str = CLIENT_NAME,
        reconnect: bool = False,
        on_event: EventCallback | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        alternates: Iterable[tuple[str, int]] = (),
    ) -> None:
        """Prefer `connect()`, which also opens the connection."""
        #: where to connect; read again at each reconnection attempt, so it may be changed
        self.host = host
        self.port = port
        #: other servers of the same service (nodes of one cluster), tried in turn after (host, port)
        self.alternates = list(alternates)
        self.client_name = client_name
        self.reconnect = reconnect
        self.connect_timeout_s = connect_timeout_s
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._events_ended = False
        self._link: _Link | None = None
        self._ready = False  # _link is up and the session restored: requests may be written
        self._pending: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._notes: list[f.Frame] = []  # Acks and MarkReads waiting for a connection
        self._reconnector: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None
        self._subscribed = False
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        #: the server's Welcome on the current (or last) connection: its limits
        self.welcome: Welcome
        #: the logged-in alias, or None
        self.alias: str | None = None
        #: the session token of the last login (resumes the session on reconnection), or ""
        self.token = ""
        #: when `token` expires (seconds since the epoch; 0 if unknown)
        self.token_expires_at = 0.0
        #: who is online, kept up to date once `subscribe()` was called
        self.online: set[str] = set()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        client_name: str = CLIENT_NAME,
        reconnect: bool = False,
        on_event: EventCallback | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        alternates: Iterable[tuple[str, int]] = (),
    ) -> SessionClient:
        """Connect to (host, port) and do the Hello/Welcome handshake; if it cannot be reached, to
        each of `alternates` in turn (the other nodes of a cluster), which reconnections try too.

        `ssl`: True for TLS verified against the system's certificate authorities, an SSLContext for
        TLS as it says (`server_hostname` overrides the name checked, by default `host`), None or
        False for plain TCP. Raises OSError (ConnectionRefusedError, TimeoutError, ssl.SSLError,
        ConnectionLost...) if the server cannot be reached, SessionError if it refuses the handshake.
        """
        context = _ssl.create_default_context() if ssl is True else (ssl or None)
        client = cls(
            host,
            port,
            ssl=context,
            server_hostname=server_hostname,
            client_name=client_name,
            reconnect=reconnect,
            on_event=on_event,
            connect_timeout_s=connect_timeout_s,
            alternates=alternates,
        )
        client._link = await client._open_link(first=True)
        client._ready = True
        return client

    @classmethod
    async def connect_any(
        cls, servers: str, default_port: int = DEFAULT_PORT, **options: Any
    ) -> SessionClient:
        """`connect()` to servers as a person writes them (``host[:port]``, comma-separated: the nodes
        of a cluster, tried in turn); `options` are `connect()`'s. Raises ValueError for a bad list."""
        first, *rest = parse_servers(servers, default_port)
        return await cls.connect(first[0], first[1], alternates=rest, **options)

    # -- state --------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the connection is up (False while reconnecting and once closed)."""
        return self._ready

    @property
    def closed(self) -> bool:
        """True once closed, by `close()` or because the connection was lost for good."""
        return self._closed_reason is not None

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- accounts -----------------------------------------------------------------------------------

    async def register(self, alias: str, full_name: str, birth_date: str, password: str) -> None:
        """Create an account; `birth_date` is DD/MM/YYYY. Does not log in."""
        answer = await self._call(
            f.Register, alias=alias, full_name=full_name, birth_date=birth_date, password=password
        )
        _expect(answer, f.Ok)

    async def login(self, alias: str, password: str) -> str:
        """Log in; returns the session token (also kept in `token`, to resume after a drop)."""
        answer = _expect(await self._call(f.Login, alias=alias, password=password), f.LoggedIn)
        self._logged_in(answer)
        return answer.token

    async def resume(self, token: str) -> str:
        """Log in with the token of an earlier login; returns the alias it belongs to."""
        answer = _expect(await self._call(f.Login, token=token), f.LoggedIn)
        self._logged_in(answer)
        return answer.alias

    def _logged_in(self, answer: f.LoggedIn) -> None:
        if answer.alias != self.alias:
            self._seen.clear()  # message ids are per mailbox
            self._seen_order.clear()
        self.alias, self.token = answer.alias, answer.token
        if answer.expires_at:
            self.token_expires_at = answer.expires_at

    async def logout(self) -> None:
        """End the session and revoke its token; the connection stays open (not logged in)."""
        _expect(await self._call(f.Logout), f.Ok)
        self.alias, self.token, self.token_expires_at = None, "", 0.0

    async def change_password(self, old: str, new: str) -> None:
        """Change the password. The server revokes every token of the user, this client's included:
        the session goes on, but cannot be resumed after a drop until the next `login()`."""
        _expect(await self._call(f.ChangePassword, old_password=old, new_password=new), f.Ok)
        self.token, self.token_expires_at = "", 0.0

    async def delete_account(self, password: str) -> None:
        """Delete the logged-in account and its messages; the connection stays open, logged out."""
        _expect(await self._call(f.DeleteAccount, password=password), f.Ok)
        self.alias, self.token, self.token_expires_at = None, "", 0.0

    # -- messages -----------------------------------------------------------------------------------

    async def send(self, to: str, text: str, *, key: str | None = None, attachment: int = 0) -> Accepted:
        """Send `text` (and an uploaded attachment) to `to`; returns once the server committed it.

        `key` identifies the message for resends (default: a fresh random one); sending again with
        the same key is answered with the same message id and delivers nothing more.
        """
        if len(text.encode()) > self.welcome.max_text_bytes:
            raise ValueError(f"text longer than the server's {self.welcome.max_text_bytes} bytes")
        key = key or uuid.uuid4().hex
        answer = await self._call(f.Send, to=to, key=key, text=text, attachment=attachment)
        return _expect(answer, f.Accepted)

    async def mark_read(self, message_ids: Iterable[int]) -> None:
        """Tell the server these messages (ids of received Messages) were read: their senders get
        Read receipts. Nothing is answered; the frame goes with the next write."""
        ids = list(message_ids)
        if not ids:
            return
        frame = f.MarkRead(message_ids=ids)
        _validate(frame)
        self._check_usable()
        link = self._link
        if self._ready and link is not None:
            link.queue(frame)
        else:
            self._notes.append(frame)

    async def subscribe(self) -> list[str]:
        """Watch presence: returns who is online now; PresenceChanged events follow each change
        (and `online` is kept current). Renewed automatically after a reconnection."""
        presence = _expect(await self._call(f.Subscribe), f.Presence)
        self._subscribed = True
        self.online = set(presence.online)
        return list(presence.online)

    async def history(self, peer: str, before: float = 0.0, limit: int = 50) -> HistoryPage:
        """The conversation with `peer`, newest first: up to `limit` messages sent before `before`
        (seconds since the epoch; 0 for the newest). `more` says whether older ones remain."""
        return _expect(await self._call(f.History, peer=peer, before=before, limit=limit), f.HistoryPage)

    # -- attachments --------------------------------------------------------------------------------

    async def upload(
        self, name: str, media_type: str, data: bytes, chunk_size: int = UPLOAD_CHUNK_BYTES
    ) -> int:
        """Upload `data` as an attachment; returns its id, to pass to `send(attachment=...)`.

        Goes in chunks of `chunk_size` bytes, fewer if the server's max_frame_bytes requires it.
        ValueError if `data` is larger than the server's max_attachment_bytes.
        """
        welcome = self.welcome
        if len(data) > welcome.max_attachment_bytes:
            raise ValueError(f"attachment larger than the server's {welcome.max_attachment_bytes} bytes")
        step = max(1, min(chunk_size, welcome.max_frame_bytes - FRAME_OVERHEAD_BYTES))
        ready = _expect(
            await self._call(f.UploadStart, name=name, media_type=media_type, size=len(data)), f.UploadReady
        )
        view = memoryview(data)
        while ready.offset < len(data):
            piece = bytes(view[ready.offset : ready.offset + step])
            answer = await self._call(f.UploadChunk, upload=ready.upload, offset=ready.offset, data=piece)
            ready = _expect(answer, f.UploadReady)
        if not ready.attachment:
            raise SessionClientError(f"upload {ready.upload} not complete at {ready.offset} bytes")
        return ready.attachment

    async def fetch(self, attachment_id: int) -> bytes:
        """The whole content of an attachment (one of yours, or of a message to you)."""
        parts: list[bytes] = []
        offset, size = 0, -1
        while offset < size or size < 0:
            answer = await self._call(
                f.Fetch, attachment=attachment_id, offset=offset, length=FETCH_CHUNK_BYTES
            )
            chunk = _expect(answer, f.Chunk)
            size = chunk.size
            if not chunk.data and offset < size:
                raise SessionClientError(f"attachment {attachment_id} ended at {offset} of {size} bytes")
            parts.append(chunk.data)
            offset += len(chunk.data)
        return b"".join(parts)

    # -- events -------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """The events, in order, until the client is closed (only without `on_event`)."""
        if self._on_event is not None:
            raise RuntimeError("this client hands its events to on_event")
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # any other reader ends too
                return
            yield event

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            self._events.put_nowait(event)
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("on_event failed on %r", event)

    def _end_events(self) -> None:
        if not self._events_ended:
            self._events_ended = True
            self._events.put_nowait(None)

    # -- closing ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection (writing what is queued first). The session token stays valid:
        `resume()` on another client continues the session. Pending requests fail (ConnectionLost)."""
        reason = self._closed_reason = self._closed_reason or "client closed"
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None and reconnector is not asyncio.current_task():
            reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnector
        self._fail(lambda req: True, reason)
        link, self._link, self._ready = self._link, None, False
        if link is not None:
            link.close()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(link.closed)
            except TimeoutError:
                link.abort()
        self._end_events()

    def _shut(self, reason: str) -> None:
        """The connection is lost for good: fail everything, tell the application, end the events."""
        log.info("session connection lost for good: %s", reason)
        self._closed_reason = reason
        self._ready = False
        self._fail(lambda req: True, reason)
        self._emit(Disconnected(reason, reconnecting=False))
        self._end_events()

    # -- requests -----------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionLost(self._closed_reason)

    def _next_id(self) -> int:
        rid = next(self._ids)
        if rid > _MAX_REQUEST_ID:
            self._ids = itertools.count(2)
            rid = 1
        return rid

    async def _call(self, kind: type[f.Frame], **fields: Any) -> f.Frame:
        """Send a request and return its answer; SessionError if the answer is an Error."""
        self._check_usable()
        # Backpressure: while the transport's buffer is full, wait (not while reconnecting: then
        # the request just waits in _pending to be written on the next connection).
        while (link := self._link) is not None and self._ready and not link.writable.is_set():
            await link.writable.wait()
        self._check_usable()
        frame: Any = kind(id=self._next_id(), **fields)
        _validate(frame)
        request = _Request(frame, self._loop.create_future())
        self._pending[frame.id] = request
        if self._ready and link is not None:
            self._write(request, link)
        try:
            return await self._await(request)
        finally:
            del request  # see _await

    async def _call_on(self, link: _Link, frame: Any) -> f.Frame:
        """Send a request on `link` even though it is not ready (restoring a session on it)."""
        request = _Request(frame, self._loop.create_future())
        self._pending[frame.id] = request
        self._write(request, link)
        try:
            return await self._await(request)
        finally:
            del request  # see _await

    async def _await(self, request: _Request) -> f.Frame:
        try:
            return await request.future
        finally:
            # Answered, failed or cancelled by the caller: it is no longer pending (and a cancelled
            # Send is not sent again).
            if self._pending.get(request.frame.id) is request:
                del self._pending[request.frame.id]
            # A failure's traceback holds these frames; were they to hold the future that holds the
            # failure, the caller's frames would live on in a cycle until the cyclic GC runs (in any
            # thread: a problem for Qt callers).
            del request

    def _write(self, request: _Request, link: _Link) -> None:
        request.sent_on = link
        link.queue(request.frame)

    def _fail(self, which: Callable[[_Request], bool], reason: str) -> None:
        for rid, request in list(self._pending.items()):
            if which(request):
                del self._pending[rid]
                if not request.future.done():
                    request.future.set_exception(ConnectionLost(reason))

    # -- input --------------------------------------------------------------------------------------

    def _on_frame(self, link: _Link, frame: Any) -> None:
        if isinstance(frame, Message):
            self._on_message(link, frame)
        elif isinstance(frame, f.Messages):  # version 2: a page, each as if pushed alone
            for message in frame.messages:
                self._on_message(link, message)
        elif isinstance(frame, Delivered | Read):
            self._emit(frame)
        elif isinstance(frame, PresenceChanged):
            if frame.online:
                self.online.add(frame.alias)
            else:
                self.online.discard(frame.alias)
            self._emit(frame)
        elif isinstance(frame, f.Ping):
            link.queue(f.Pong(n=frame.n))
        elif isinstance(frame, f.Pong):
            pass  # receiving it was the point
        elif isinstance(frame, Welcome):
            if not link.welcome.done():
                link.welcome.set_result(frame)
        elif isinstance(frame, f.GoAway):
            # The server answers nothing more on this connection: go now, and send what is pending
            # again on the next one (a Send's key makes that safe).
            link.reason = f"the server is stopping ({frame.reason or 'no reason given'})"
            link.going_away = True
            link.close()
        elif isinstance(frame, f.Error) and frame.re == 0:
            # The server is closing the connection, and says why.
            link.reason = describe_error(frame.code, frame.message, frame.retry_after_s)
            link.final = frame.code in _FINAL_CODES
            if not link.welcome.done():
                link.welcome.set_exception(SessionError(frame.code, frame.message, frame.retry_after_s))
                link.welcome.exception()  # retrieved: the handshake may have timed out already
        else:
            self._on_answer(link, frame)

    def _on_answer(self, link: _Link, frame: Any) -> None:
        rid = getattr(frame, "re", 0)
        request = self._pending.get(rid)
        if request is None or request.sent_on is not link:
            log.debug("answer to no pending request: %r", frame)
            return
        del self._pending[rid]
        if request.future.done():
            return
        if isinstance(frame, f.Error):
            request.future.set_exception(SessionError(frame.code, frame.message, frame.retry_after_s))
        else:
            request.future.set_result(frame)

    def _on_message(self, link: _Link, message: Message) -> None:
        message_id = message.message_id
        if message_id not in self._seen:
            self._seen.add(message_id)
            self._seen_order.append(message_id)
            if len(self._seen_order) > SEEN_WINDOW:
                self._seen.discard(self._seen_order.popleft())
            self._emit(message)
        link.ack(message_id)

    # -- connections --------------------------------------------------------------------------------

    async def _open_link(self, *, first: bool = False) -> _Link:
        """A new connection, past Hello/Welcome: to (host, port) first when connecting, to the
        next address first when reconnecting; the address that answered becomes (host, port)."""
        addresses = [(self.host, self.port), *(a for a in self.alternates if a != (self.host, self.port))]
        if not first and len(addresses) > 1:
            addresses = addresses[1:] + addresses[:1]
        error: BaseException | None = None
        for host, port in addresses:
            try:
                link = await self._open_link_to(host, port)
            except (OSError, SessionError) as exc:
                error = exc
                log.info("cannot connect to %s:%d: %s", host, port, os_reason(exc))
                continue
            if (host, port) != (self.host, self.port):
                self.alternates = [a for a in addresses if a != (host, port)]
                self.host, self.port = host, port
            return link
        assert error is not None
        raise error

    async def _open_link_to(self, host: str, port: int) -> _Link:
        link = _Link(self)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._loop.create_connection(
                    lambda: link,
                    host,
                    port,
                    ssl=self._ssl,
                    server_hostname=(self._server_hostname or host) if self._ssl else None,
                )
                welcome = await link.welcome
        except BaseException:
            link.abort()
            raise
        self.welcome = welcome
        link.codec.heartbeat_s = welcome.heartbeat_s
        link.codec.idle_timeout_s = welcome.idle_timeout_s
        link.arm_timer()
        return link

    def _link_lost(self, link: _Link) -> None:
        if link is not self._link:
            # A connection being set up by the reconnection, or closed by close(): only the
            # requests written on it fail.
            self._fail(lambda req: req.sent_on is link, link.reason)
            return
        self._link, self._ready = None, False
        if self._closed_reason is not None:
            return
        if not (self.reconnect and not link.final):
            self._shut(link.reason)
            return
        log.info("session connection lost (%s); reconnecting", link.reason)
        self._fail(lambda req: req.sent_on is link and not isinstance(req.frame, _REPLAYABLE), link.reason)
        self._notes.extend(link.unsent_notes())
        self._emit(Disconnected(link.reason, reconnecting=True))
        self._reconnector = self._loop.create_task(self._reconnect(link.reason, at_once=link.going_away))

    async def _reconnect(self, reason: str, *, at_once: bool = False) -> None:
        delay = RECONNECT_FIRST_DELAY_S
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            if not (at_once and attempt == 1):  # a GoAway: the next node is up, most likely
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
            try:
                link = await self._open_link()
            except (OSError, SessionError) as exc:
                reason = os_reason(exc)
                log.info("reconnection %d to %s:%d failed: %s", attempt, self.host, self.port, reason)
                continue
            try:
                await self._restore(link)
            except ConnectionLost as exc:
                reason = str(exc)
                continue
            except SessionClientError as exc:  # the token refused (or a server bug): no way back
                link.close()
                if isinstance(exc, SessionError) and exc.code is ErrorCode.INTERNAL:
                    reason = str(exc)
                    continue
                self._reconnector = None
                self._shut(f"could not resume the session: {exc}")
                return
            except BaseException:
                link.abort()
                raise
            self._link, self._ready, self._reconnector = link, True, None
            for request in list(self._pending.values()):  # in the order they were made
                self._write(request, link)
            notes, self._notes = self._notes, []
            for note in notes:
                link.queue(note)
            log.info("session connection back (attempt %d)", attempt)
            self._emit(Reconnected())
            return
        self._reconnector = None
        self._shut(f"{reason}; gave up after {RECONNECT_ATTEMPTS} attempts to reconnect")

    async def _restore(self, link: _Link) -> None:
        """Log in again with the token, and subscribe again, on a new connection."""
        if self.alias is not None:
            if not self.token:
                raise SessionError(ErrorCode.BAD_TOKEN, "the session token was revoked")
            answer = await self._call_on(link, f.Login(id=self._next_id(), token=self.token))
            self._logged_in(_expect(answer, f.LoggedIn))
        if self._subscribed:
            presence = _expect(await self._call_on(link, f.Subscribe(id=self._next_id())), f.Presence)
            now = set(presence.online)
            before, self.online = self.online, now
            for alias in sorted(now - before):
                self._emit(PresenceChanged(alias=alias, online=True))
            for alias in sorted(before - now):
                self._emit(PresenceChanged(alias=alias, online=False))
