"""Asyncio client of the classic protocol (`shared/protocol/classic.md`), thin over the sans-I/O codec.

Theory of operation
-------------------
The classic protocol has one request per TCP connection: `request` connects, writes the bytes
`ClientConnection.send` gives, feeds what it reads back (``b""`` on EOF) until the codec hands out the
reply, and closes. Every way that can fail (refused, unreachable, timed out, a reply that breaks the
protocol) becomes one `ClassicClientError` with a message fit for a person.

The server delivers messages and receipts the other way round: on CONNECT the client names the port of
a listener, and the server opens one TCP connection per item to it. `PushListener` is that listener:
each connection is parsed with `PushReader` and the push is handed to a callback. Couriers push to
one recipient one item at a time, so the listener hands pushes to the callback in the order their
connections were accepted, even when the server has already opened the next connection before the
previous one was read to the end.

`ClassicClient` ties the two together for one user at a time (what the `dmds client` shell and other
programs need): it remembers the connected alias and owns the listener, which it opens before sending
CONNECT (the server may push stored messages at once) and closes when the connection ends.

`MESSAGES` gives the human text of every result code of classic.md, per operation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Final, overload

from dmds.client.oserrors import os_reason
from dmds.protocols.classic import (
    ClientConnection,
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    LocalProtocolError,
    Push,
    PushReader,
    Register,
    RemoteProtocolError,
    Reply,
    Request,
    Send,
    SendReply,
    Unregister,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MESSAGES",
    "OK",
    "AlreadyConnectedError",
    "ClassicClient",
    "ClassicClientError",
    "ClassicStateError",
    "NotConnectedError",
    "PushCallback",
    "PushListener",
    "describe",
    "request",
]

log = logging.getLogger(__name__)

#: Bound on a whole request/reply exchange (connect, write, read the reply).
DEFAULT_TIMEOUT_S: Final = 10.0
#: A push connection that does not deliver its whole item within this long is dropped.
PUSH_READ_TIMEOUT_S: Final = 10.0
#: Limits on what the server sends us. The server's own limits are settings (256 and 65536 bytes by
#: default); ours are more generous, so that a server configured for more is still understood.
MAX_FIELD_BYTES: Final = 65536
MAX_TEXT_BYTES: Final = 16 * 1024 * 1024
_READ_SIZE: Final = 65536

OK: Final = 0

#: The human text of every result code of classic.md, keyed by (operation name, code).
MESSAGES: Final[dict[tuple[str, int], str]] = {
    ("REGISTER", 0): "registered",
    ("REGISTER", 1): "alias already taken",
    ("REGISTER", 2): "registration refused (invalid fields or server error)",
    ("UNREGISTER", 0): "user removed, with its stored messages",
    ("UNREGISTER", 1): "no such user",
    ("UNREGISTER", 2): "server error",
    ("CONNECT", 0): "connected",
    ("CONNECT", 1): "no such user",
    ("CONNECT", 2): "user already connected",
    ("CONNECT", 3): "connection refused (invalid fields or server error)",
    ("DISCONNECT", 0): "disconnected",
    ("DISCONNECT", 1): "no such user",
    ("DISCONNECT", 2): "user not connected",
    ("DISCONNECT", 3): "server error",
    ("SEND", 0): "message accepted",
    ("SEND", 1): "sender or recipient does not exist",
    ("SEND", 2): "message refused (the sender must be connected; or invalid fields or server error)",
    ("CONNECTEDUSERS", 0): "ok",
    ("CONNECTEDUSERS", 1): "you are not connected",
    ("CONNECTEDUSERS", 2): "request refused (no such user, or server error)",
}


def describe(operation: str, code: int) -> str:
    """The human text of `code` as a reply to `operation` (e.g. ``"REGISTER"``)."""
    return MESSAGES.get((operation.upper(), code), f"unexpected result code {code}")


class ClassicClientError(Exception):
    """A request could not be made: the server is unreachable, timed out, or broke the protocol."""


class ClassicStateError(ClassicClientError):
    """The client is not in the state the call needs (connected or not), so nothing was sent."""


class NotConnectedError(ClassicStateError):
    """The call needs a connected alias and the client has none."""


class AlreadyConnectedError(ClassicStateError):
    """CONNECT on a client that is already connected (one alias per client)."""


@overload
async def request(host: str, port: int, req: Send, *, timeout_s: float = ...) -> SendReply: ...
@overload
async def request(
    host: str, port: int, req: ConnectedUsers, *, timeout_s: float = ...
) -> ConnectedUsersReply: ...
@overload
async def request(host: str, port: int, req: Request, *, timeout_s: float = ...) -> Reply: ...
async def request(host: str, port: int, req: Request, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Reply:
    """Send `req` to the server at (host, port) on a connection of its own and return the reply.

    Raises ClassicClientError if the server cannot be reached, does not reply within `timeout_s`, or
    replies with bytes that break the protocol; also if `req` cannot be encoded (a NUL in a field).
    """
    where = f"{host}:{port}"
    conn = ClientConnection(MAX_FIELD_BYTES)
    try:
        data = conn.send(req)
    except LocalProtocolError as exc:
        raise ClassicClientError(f"cannot send {req.OP.decode()}: {exc}") from None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise ClassicClientError(f"server unreachable ({where}: {os_reason(exc)})") from exc
            try:
                writer.write(data)
                await writer.drain()
                while True:
                    reply = conn.next_event()
                    if reply is not None:
                        return reply
                    conn.receive_data(await reader.read(_READ_SIZE))
            except OSError as exc:
                raise ClassicClientError(f"connection to {where} broke ({os_reason(exc)})") from exc
            except RemoteProtocolError as exc:
                raise ClassicClientError(f"bad reply from {where} ({exc.reason})") from None
            finally:
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise ClassicClientError(f"no reply from {where} within {timeout_s:g} s") from None


PushCallback = Callable[[Push], Awaitable[None] | None]


class PushListener:
    """The TCP listener the server pushes messages and receipts to, one connection per item."""

    def __init__(self, server: asyncio.Server, on_push: PushCallback) -> None:
        self._server = server
        self._on_push = on_push
        self._handlers: set[asyncio.Task[None]] = set()
        # Set when the last accepted connection has handed its push to the callback (or failed).
        self._previous_done: asyncio.Event | None = None
        sockname = server.sockets[0].getsockname()
        self._host: str = sockname[0]
        self._port: int = sockname[1]

    @classmethod
    async def start(cls, host: str, port: int = 0, *, on_push: PushCallback) -> PushListener:
        """Listen on (host, port); port 0 picks a free port (see `.port`). Raises OSError."""
        listener: PushListener | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert listener is not None  # connections are accepted only once start_server returned
            await listener._handle(reader, writer)

        server = await asyncio.start_server(handle, host, port)
        listener = cls(server, on_push)
        return listener

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    async def close(self) -> None:
        """Stop listening and drop the connections still being read."""
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        previous, done = self._previous_done, asyncio.Event()
        self._previous_done = done
        peer = writer.get_extra_info("peername")
        try:
            push = await self._read_push(reader, peer)
            # Pushes reach the callback in the order their connections arrived.
            if previous is not None:
                await previous.wait()
            if push is not None:
                await self._deliver(push)
        finally:
            done.set()
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _read_push(self, reader: asyncio.StreamReader, peer: object) -> Push | None:
        parser = PushReader(MAX_FIELD_BYTES, MAX_TEXT_BYTES)
        try:
            async with asyncio.timeout(PUSH_READ_TIMEOUT_S):
                while True:
                    push = parser.next_event()
                    if push is not None:
                        return push
                    parser.receive_data(await reader.read(_READ_SIZE))
        except RemoteProtocolError as exc:
            log.debug("ignoring a malformed push from %s: %s", peer, exc.reason)
        except TimeoutError:
            log.debug("ignoring a push from %s: not complete within %g s", peer, PUSH_READ_TIMEOUT_S)
        except OSError as exc:
            log.debug("ignoring a push from %s: connection broke: %s", peer, exc)
        return None

    async def _deliver(self, push: Push) -> None:
        try:
            result = self._on_push(push)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("push callback failed on %r", push)


def _ignore_push(push: Push) -> None:
    log.debug("push with no callback: %r", push)


class ClassicClient:
    """One user's conversation with a classic server: the connected alias and its push listener.

    Methods return the result codes of classic.md (see `MESSAGES`) and raise ClassicClientError when
    the server cannot be asked. Requests that need a connected user raise NotConnectedError without
    contacting the server when there is none; CONNECT while connected raises AlreadyConnectedError.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        listen_host: str = "0.0.0.0",
        on_push: PushCallback | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.listen_host = listen_host
        self.timeout_s = timeout_s
        self._on_push: PushCallback = on_push or _ignore_push
        self._alias: str | None = None
        self._listener: PushListener | None = None

    @property
    def alias(self) -> str | None:
        """The connected alias, or None."""
        return self._alias

    @property
    def connected(self) -> bool:
        return self._alias is not None

    @property
    def listener(self) -> PushListener | None:
        return self._listener

    @overload
    async def _request(self, req: Send) -> SendReply: ...
    @overload
    async def _request(self, req: ConnectedUsers) -> ConnectedUsersReply: ...
    @overload
    async def _request(self, req: Request) -> Reply: ...
    async def _request(self, req: Request) -> Reply:
        return await request(self.host, self.port, req, timeout_s=self.timeout_s)

    def _require_alias(self) -> str:
        if self._alias is None:
            raise NotConnectedError("not connected")
        return self._alias

    async def _forget_connection(self) -> None:
        listener, self._listener, self._alias = self._listener, None, None
        if listener is not None:
            await listener.close()

    async def register(self, full_name: str, alias: str, birth_date: str) -> int:
        """REGISTER; `birth_date` is DD/MM/YYYY."""
        return (await self._request(Register(full_name, alias, birth_date))).code

    async def unregister(self, alias: str) -> int:
        """UNREGISTER; removing the connected alias also ends this client's connection."""
        code = (await self._request(Unregister(alias))).code
        if code == OK and alias == self._alias:
            await self._forget_connection()
        return code

    async def connect(self, alias: str) -> int:
        """Open the push listener, then CONNECT with its port; the listener is closed unless code is 0.

        Raises AlreadyConnectedError if this client is already connected, OSError if the listener
        cannot be opened.
        """
        if self._alias is not None:
            raise AlreadyConnectedError(f"already connected as {self._alias}")
        listener = await PushListener.start(self.listen_host, 0, on_push=self._on_push)
        try:
            code = (await self._request(Connect(alias, listener.port))).code
        except BaseException:
            await listener.close()
            raise
        if code != OK:
            await listener.close()
            return code
        self._alias, self._listener = alias, listener
        return code

    async def disconnect(self) -> int:
        """DISCONNECT the connected alias. The local connection ends unless the server failed (code 3)."""
        code = (await self._request(Disconnect(self._require_alias()))).code
        if code in (0, 1, 2):  # disconnected now, or the server did not consider us connected anyway
            await self._forget_connection()
        return code

    async def send(self, dest: str, text: str) -> tuple[int, int]:
        """SEND `text` to `dest` from the connected alias: (code, message id; meaningful if code is 0)."""
        reply = await self._request(Send(self._require_alias(), dest, text))
        return reply.code, reply.message_id

    async def connected_users(self) -> tuple[int, list[str]]:
        """CONNECTEDUSERS as the connected alias: (code, aliases; empty unless code is 0)."""
        reply = await self._request(ConnectedUsers(self._require_alias()))
        return reply.code, list(reply.aliases)

    async def close(self, *, disconnect: bool = True) -> None:
        """End the conversation: DISCONNECT first if connected and `disconnect`, then close the listener."""
        if self._alias is not None and disconnect:
            with suppress(ClassicClientError):
                await self.disconnect()
        await self._forget_connection()

    async def __aenter__(self) -> ClassicClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
