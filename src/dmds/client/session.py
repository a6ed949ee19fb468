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
What the server pushes (`Message`, `Delivered`, `Read`, `PresenceChanged`) and what happens to the
connection (`Disconnected`, `Reconnected`) are events: passed to ``on_event=callback`` if `connect`
was given one, else read with ``async for event in client.events()``. `session_events` tells how
they are handed over and when a `Message` is acknowledged.

Theory of operation
-------------------
The client is made of parts, one job each: `session_link` is one connection (the sans-I/O codec on
an `asyncio.Protocol`, output written once per loop pass, heartbeats); `session_inbox` routes what
arrives; `session_outbox` holds the requests waiting for their answers; `session_events` hands
events to the application; `session_reconnect` says where and when to connect again and resumes
the session; `session_errors` has the errors and the words for the server's error codes.
`SessionClient`, here, ties them together. When the transport's buffer is full, new requests wait
for it to drain.

Reconnection (``reconnect=True``): when the connection drops or the server stops, the client
connects again, up to `RECONNECT_ATTEMPTS` times after a backoff from `RECONNECT_FIRST_DELAY_S` to
`RECONNECT_MAX_DELAY_S`, to `host` and `port` as they are then (then to `alternates`); it resumes
the session and writes again the requests safe to repeat, or gives up and closes. No accepted
message is lost either way. `session_reconnect` tells it step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
import uuid
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Final

import msgspec

from dmds import __version__
from dmds.client import session_attachments as attachments
from dmds.client.session_attachments import FETCH_CHUNK_BYTES, FRAME_OVERHEAD_BYTES, UPLOAD_CHUNK_BYTES
from dmds.client.session_errors import (
    ERROR_TEXT,
    ConnectionLost,
    SessionClientError,
    SessionError,
    describe_error,
    expect,
)
from dmds.client.session_events import (
    SEEN_WINDOW,
    Disconnected,
    Event,
    EventCallback,
    EventStream,
    Reconnected,
)
from dmds.client.session_inbox import Inbox
from dmds.client.session_link import MAX_INCOMING_FRAME_BYTES, Link
from dmds.client.session_outbox import Outbox
from dmds.client.session_reconnect import (
    DEFAULT_PORT,
    addresses_to_try,
    open_any,
    parse_servers,
    presence_changes,
    reconnect,
    resume_session,
)
from dmds.protocols.session import frames as f
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
    "FETCH_CHUNK_BYTES",
    "FRAME_OVERHEAD_BYTES",
    "MAX_INCOMING_FRAME_BYTES",
    "RECONNECT_ATTEMPTS",
    "RECONNECT_FIRST_DELAY_S",
    "RECONNECT_MAX_DELAY_S",
    "SEEN_WINDOW",
    "UPLOAD_CHUNK_BYTES",
    "Accepted",
    "Attachment",
    "ConnectionLost",
    "Delivered",
    "Disconnected",
    "Event",
    "EventCallback",
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
    "parse_servers",
]

log = logging.getLogger(__name__)

#: Bound on opening a connection: TCP (and TLS) connect, then Hello/Welcome.
CONNECT_TIMEOUT_S: Final = 10.0
#: How long `close()` waits for the server to see the connection closed before aborting it.
CLOSE_TIMEOUT_S: Final = 2.0
# Passed to session_reconnect at each drop, so that a program (or a test) may change them here.
#: Reconnection: attempts after a drop before giving up...
RECONNECT_ATTEMPTS: Final = 8
#: ...waiting this long before the first, doubling each time...
RECONNECT_FIRST_DELAY_S: Final = 0.1
#: ...up to this long (each wait is shortened by a random jitter of up to half).
RECONNECT_MAX_DELAY_S: Final = 3.0
#: Program name sent in Hello.
CLIENT_NAME: Final = f"dmds-python/{__version__}"


def _validate(frame: f.Frame) -> None:
    """ValueError if `frame` breaks a bound of its fields (the server would close the connection)."""
    try:
        msgspec.msgpack.decode(msgspec.msgpack.encode(frame), type=type(frame))
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {type(frame).__name__}: {exc}") from None


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
        self._loop = asyncio.get_running_loop()
        self._events = EventStream(on_event)
        self._link: Link | None = None
        self._ready = False  # _link is up and the session restored: requests may be written
        self._outbox = Outbox()
        self._reconnector: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None
        self._subscribed = False
        self._inbox = Inbox(self._events, self._outbox)
        #: the server's Welcome on the current (or last) connection: its limits
        self.welcome: Welcome
        #: the logged-in alias, or None
        self.alias: str | None = None
        #: the session token of the last login (resumes the session on reconnection), or ""
        self.token = ""
        #: when `token` expires (seconds since the epoch; 0 if unknown)
        self.token_expires_at = 0.0

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

    @property
    def online(self) -> set[str]:
        """Who is online, kept up to date once `subscribe()` was called."""
        return self._inbox.online

    @online.setter
    def online(self, aliases: set[str]) -> None:
        self._inbox.online = aliases

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
        expect(answer, f.Ok)

    async def login(self, alias: str, password: str) -> str:
        """Log in; returns the session token (also kept in `token`, to resume after a drop)."""
        answer = expect(await self._call(f.Login, alias=alias, password=password), f.LoggedIn)
        self._logged_in(answer)
        return answer.token

    async def resume(self, token: str) -> str:
        """Log in with the token of an earlier login; returns the alias it belongs to."""
        answer = expect(await self._call(f.Login, token=token), f.LoggedIn)
        self._logged_in(answer)
        return answer.alias

    def _logged_in(self, answer: f.LoggedIn) -> None:
        if answer.alias != self.alias:
            self._inbox.seen.clear()  # message ids are per mailbox
        self.alias, self.token = answer.alias, answer.token
        if answer.expires_at:
            self.token_expires_at = answer.expires_at

    async def logout(self) -> None:
        """End the session and revoke its token; the connection stays open (not logged in)."""
        expect(await self._call(f.Logout), f.Ok)
        self.alias, self.token, self.token_expires_at = None, "", 0.0

    async def change_password(self, old: str, new: str) -> None:
        """Change the password. The server revokes every token of the user, this client's included:
        the session goes on, but cannot be resumed after a drop until the next `login()`."""
        expect(await self._call(f.ChangePassword, old_password=old, new_password=new), f.Ok)
        self.token, self.token_expires_at = "", 0.0

    async def delete_account(self, password: str) -> None:
        """Delete the logged-in account and its messages; the connection stays open, logged out."""
        expect(await self._call(f.DeleteAccount, password=password), f.Ok)
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
        return expect(answer, f.Accepted)

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
            self._outbox.note(frame)

    async def subscribe(self) -> list[str]:
        """Watch presence: returns who is online now; PresenceChanged events follow each change
        (and `online` is kept current). Renewed automatically after a reconnection."""
        presence = expect(await self._call(f.Subscribe), f.Presence)
        self._subscribed = True
        self.online = set(presence.online)
        return list(presence.online)

    async def history(self, peer: str, before: float = 0.0, limit: int = 50) -> HistoryPage:
        """The conversation with `peer`, newest first: up to `limit` messages sent before `before`
        (seconds since the epoch; 0 for the newest). `more` says whether older ones remain."""
        return expect(await self._call(f.History, peer=peer, before=before, limit=limit), f.HistoryPage)

    # -- attachments --------------------------------------------------------------------------------

    async def upload(
        self, name: str, media_type: str, data: bytes, chunk_size: int = UPLOAD_CHUNK_BYTES
    ) -> int:
        """Upload `data` as an attachment; returns its id, to pass to `send(attachment=...)`.

        Goes in chunks of `chunk_size` bytes, fewer if the server's max_frame_bytes requires it.
        ValueError if `data` is larger than the server's max_attachment_bytes.
        """
        return await attachments.upload(
            self._call, self.welcome, name, media_type, data, chunk_size=chunk_size
        )

    async def fetch(self, attachment_id: int) -> bytes:
        """The whole content of an attachment (one of yours, or of a message to you)."""
        return await attachments.fetch(self._call, attachment_id)

    # -- events -------------------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """The events, in order, until the client is closed (only without `on_event`)."""
        return self._events.read()

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
        self._outbox.fail_all(reason)
        link, self._link, self._ready = self._link, None, False
        if link is not None:
            await link.close_within(CLOSE_TIMEOUT_S)
        self._events.end()

    def _shut(self, reason: str) -> None:
        """The connection is lost for good: fail everything, tell the application, end the events."""
        log.info("session connection lost for good: %s", reason)
        self._closed_reason = reason
        self._ready = False
        self._outbox.fail_all(reason)
        self._events.emit(Disconnected(reason, reconnecting=False))
        self._events.end()

    # -- requests -----------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionLost(self._closed_reason)

    async def _call(self, kind: type[f.Frame], **fields: Any) -> f.Frame:
        """Send a request and return its answer; SessionError if the answer is an Error."""
        self._check_usable()
        # Backpressure: while the transport's buffer is full, wait (not while reconnecting: then
        # the request just waits in the outbox to be written on the next connection).
        while (link := self._link) is not None and self._ready and not link.writable.is_set():
            await link.writable.wait()
        self._check_usable()
        frame: Any = kind(id=self._outbox.next_id(), **fields)
        _validate(frame)
        return await self._outbox.call(frame, link if self._ready else None)

    # -- connections --------------------------------------------------------------------------------

    async def _open_link(self, *, first: bool = False) -> Link:
        """A new connection, past Hello/Welcome: to (host, port) first when connecting, to the
        next address first when reconnecting; the address that answered becomes (host, port)."""
        addresses = addresses_to_try((self.host, self.port), self.alternates, first=first)
        link, self.welcome, address = await open_any(
            addresses,
            lambda: Link(self.client_name, self._inbox.on_frame, self._link_lost),
            ssl=self._ssl,
            server_hostname=self._server_hostname,
            timeout_s=self.connect_timeout_s,
        )
        if address != (self.host, self.port):
            self.alternates = [a for a in addresses if a != address]
            self.host, self.port = address
        return link

    def _link_lost(self, link: Link) -> None:
        if link is not self._link:
            # A connection being set up by the reconnection, or closed by close(): only the
            # requests written on it fail.
            self._outbox.fail_written_on(link, link.reason)
            return
        self._link, self._ready = None, False
        if self._closed_reason is not None:
            return
        if not (self.reconnect and not link.final):
            self._shut(link.reason)
            return
        log.info("session connection lost (%s); reconnecting", link.reason)
        self._outbox.link_dropped(link)
        self._events.emit(Disconnected(link.reason, reconnecting=True))
        self._reconnector = self._loop.create_task(self._reconnect(link.reason, at_once=link.going_away))

    async def _reconnect(self, reason: str, *, at_once: bool = False) -> None:
        try:
            link = await reconnect(
                self._open_link,
                self._restore,
                lambda: (self.host, self.port),
                reason,
                attempts=RECONNECT_ATTEMPTS,
                first_delay_s=RECONNECT_FIRST_DELAY_S,
                max_delay_s=RECONNECT_MAX_DELAY_S,
                at_once=at_once,
            )
        except ConnectionLost as exc:
            self._reconnector = None
            self._shut(str(exc))
            return
        self._link, self._ready, self._reconnector = link, True, None
        self._outbox.resend(link)
        self._events.emit(Reconnected())

    async def _restore(self, link: Link) -> None:
        """Log in again with the token, and subscribe again, on a new connection."""
        token = self.token if self.alias is not None else None
        presence = await resume_session(
            self._outbox, link, token, self._logged_in, subscribe=self._subscribed
        )
        if presence is not None:
            before, self.online = self.online, set(presence.online)
            for event in presence_changes(before, self.online):
                self._events.emit(event)
