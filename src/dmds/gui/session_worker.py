"""The desktop client's network side in session mode: a `SessionClient` owned by the worker's loop.

Same threading model as the classic worker (`dmds.gui.loop_worker`): the GUI thread calls the public
methods, which schedule a coroutine on the worker's asyncio loop and return at once; everything that
happens comes back as `WorkerEvent`s through the one Qt signal `report`. Nothing but the loop touches
the client.

The connection
--------------
One `SessionClient` (``reconnect=True``), opened by the first operation that needs the server
(REGISTER or LOG IN) and kept while logged in; LOG OUT and UNREGISTER close it, so that the next
login starts on a fresh connection. Its events come through ``on_event`` in the loop and are turned
into window events at once: messages (`MessageArrived`, acknowledged by the library once reported),
receipts (`ReceiptArrived` with the recipient), presence (`PresenceUpdate`, pushed by the server after
LOG IN subscribed: nothing is polled), and the connection dropping and coming back (`LinkChanged`;
the library resumes the session with its token and resends unanswered messages). If it gives up, the
window is told it is no longer logged in (`ConnectionChanged`).

Account operations (REGISTER, LOG IN, LOG OUT, UNREGISTER) wait at most `timeout_s` for their answer;
when that passes, the connection is closed (the server's view of it is unknown) and the operation is
reported failed. A SEND waits as long as the library does: it resends over a new connection after a
drop and never delivers a message twice, so a message on its way is not given up for a slow answer.

Passwords go from the dialog to the server and nowhere else: not logged, not stored, not kept.

UNREGISTER deletes the account (`delete_account`, which wants the password). For the alias logged in
here it uses this connection; for another alias it opens a connection of its own, logs in there and
deletes the account (messages pushed to that login in between are acknowledged and dropped: they
belong to the account being deleted).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from PySide6.QtCore import QObject

from dmds import __version__
from dmds.client.classic import DEFAULT_TIMEOUT_S
from dmds.client.normalise import TextNormaliser
from dmds.client.oserrors import os_reason
from dmds.client.session import (
    Attachment,
    ConnectionLost,
    Delivered,
    Disconnected,
    Event,
    Message,
    PresenceChanged,
    Read,
    Reconnected,
    SessionClient,
    SessionClientError,
    SessionError,
)
from dmds.gui.conversations import AttachedFile, human_size
from dmds.gui.events import (
    AttachmentSaved,
    ConnectionChanged,
    LinkChanged,
    MessageArrived,
    OperationDone,
    PresenceUpdate,
    ReceiptArrived,
    SendDone,
    ServerLimits,
    UsersListed,
)
from dmds.gui.loop_worker import LoopWorker, weak_callback
from dmds.protocols.session.codes import ErrorCode

__all__ = ["CLIENT_NAME", "SessionWorker", "too_big"]

log = logging.getLogger(__name__)

#: Program name sent in Hello.
CLIENT_NAME: Final = f"dmds-gui/{__version__}"
#: The longest attachment name the protocol carries (ShortText), in characters.
MAX_NAME_CHARS: Final = 256
#: At most this long (seconds) the window's close waits for LOG OUT.
LOGOUT_ON_CLOSE_S: Final = 2.0
OK: Final = 0


class _Refused(Exception):
    """An operation cannot be done, for a reason already in words."""


def too_big(name: str, size: int, limit: int) -> str:
    """The words for a file larger than the server's max_attachment_bytes."""
    return f"{name} is {human_size(size)}: the server accepts attachments of at most {human_size(limit)}"


def _attached(attachment: Attachment | None) -> AttachedFile | None:
    if attachment is None:
        return None
    return AttachedFile(attachment.attachment_id, attachment.name, attachment.size, attachment.media_type)


def _short_name(name: str) -> str:
    """`name` cut to what the protocol carries, keeping its extension."""
    if len(name) <= MAX_NAME_CHARS:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 16:
        return name[:MAX_NAME_CHARS]
    return stem[: MAX_NAME_CHARS - len(suffix) - 2] + "…." + suffix


def _forget_traceback(exc: BaseException) -> None:
    """Drop the traceback of a handled exception.

    The client library keeps a failed request's exception in the request's Future, and the
    exception's traceback holds the frame that holds the request: a reference cycle. The traceback
    also holds the worker's own frames, hence the worker (a QObject), until the cyclic GC frees the
    cycle, in whichever thread it happens to run; a Qt object freed outside the GUI thread crashes
    the process. Without the traceback there is no cycle.
    """
    exc.__traceback__ = None


class SessionWorker(LoopWorker):
    """The session protocol's worker: owns one window's `SessionClient`, in the loop's thread."""

    def __init__(
        self,
        host: str,
        port: int,
        ws_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        normaliser: TextNormaliser | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(ws_url, normaliser=normaliser, parent=parent)
        self._host, self._port = host, port  # changed (by configure) in the loop only
        self._timeout_s = timeout_s
        self._client: SessionClient | None = None
        self._generation = 0  # events of a client dropped since are ignored
        self._alias: str | None = None  # logged in, as the window was told
        self._connect_lock = asyncio.Lock()
        self._start()

    # -- the connection ------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    async def _connection(self) -> SessionClient:
        """The client, connected (now, if needed)."""
        async with self._connect_lock:
            client = self._client
            if client is not None and not client.closed:
                return client
            self._generation += 1
            generation, callback = self._generation, weak_callback(self._on_client_event_of)

            def on_event(event: Event) -> None:  # no reference to self: see weak_callback
                callback((generation, event))

            client = await SessionClient.connect_any(
                self._host,
                self._port,
                reconnect=True,
                on_event=on_event,
                connect_timeout_s=self._timeout_s,
                client_name=CLIENT_NAME,
            )
            self._client = client
            welcome = client.welcome
            self._emit(ServerLimits(welcome.max_text_bytes, welcome.max_attachment_bytes))
            return client

    async def _drop_client(self) -> None:
        """Close the connection; its events, if any still come, are ignored."""
        client, self._client = self._client, None
        self._generation += 1
        if client is not None:
            await client.close()

    def _on_client_event_of(self, generation_and_event: tuple[int, Event]) -> None:
        # At the loop's next pass, not now: an Accepted and the Delivered read right behind it in
        # one chunk would otherwise reach the window as receipt first, send second (the send's
        # task resumes only at the next pass).
        asyncio.get_running_loop().call_soon(self._on_client_event, *generation_and_event)

    def _on_client_event(self, generation: int, event: Event) -> None:
        """An event of the client (in the loop, as it happens): tell the window."""
        client = self._client
        if generation != self._generation or client is None:
            return
        if isinstance(event, Message):
            attached = _attached(event.attachment)
            self._emit(MessageArrived(event.sender, event.message_id, event.text, attached))
        elif isinstance(event, Delivered | Read):
            self._emit(ReceiptArrived(event.message_id, event.to, read=isinstance(event, Read)))
        elif isinstance(event, PresenceChanged):
            self._emit(PresenceUpdate(tuple(sorted(client.online)), event.alias, event.online))
        elif isinstance(event, Disconnected):
            if event.reconnecting:
                if self._alias is not None:
                    self._emit(LinkChanged(False, event.reason))
            else:  # given up (or not allowed back: logged in again elsewhere); the client is closed
                self._client = None
                if self._alias is not None:
                    self._alias = None
                    self._emit(ConnectionChanged(None, event.reason))
        elif isinstance(event, Reconnected) and self._alias is not None:
            welcome = client.welcome
            self._emit(ServerLimits(welcome.max_text_bytes, welcome.max_attachment_bytes))
            self._emit(LinkChanged(True))

    def _reason(self, exc: BaseException) -> str:
        """`exc` in words, for a person. Drops its traceback (see `_forget_traceback`)."""
        _forget_traceback(exc)
        if isinstance(exc, ConnectionLost):
            return f"connection lost ({exc})"
        if isinstance(exc, SessionClientError | ValueError | _Refused):
            return str(exc)
        if isinstance(exc, OSError):
            return f"server unreachable ({self._where}: {os_reason(exc)})"
        return str(exc) or type(exc).__name__

    async def _account_call(
        self,
        operation: str,
        alias: str,
        call: Callable[[SessionClient], Awaitable[object]],
        client: SessionClient | None = None,
    ) -> bool:
        """Run `call` on `client` (default: this window's connection, opened if needed) within the
        timeout; report a failure as OperationDone and return False."""
        own = client is None
        error_code: ErrorCode | None = None
        try:
            if client is None:
                client = await self._connection()
            async with asyncio.timeout(self._timeout_s):
                await call(client)
        except TimeoutError as exc:
            _forget_traceback(exc)
            if own:  # whether it took effect is unknown: start again on a new connection
                await self._drop_client()
            error = f"no answer from {self._where} within {self._timeout_s:g} s"
        except SessionError as exc:
            error, error_code = self._reason(exc), exc.code
        except (SessionClientError, OSError, ValueError) as exc:
            error = self._reason(exc)
        else:
            return True
        self._emit(OperationDone(operation, alias, None, error, error_code))
        return False

    # -- operations (called in the GUI thread) -----------------------------------------------------

    def configure(self, host: str, port: int, ws_url: str) -> None:
        """Use another server or normaliser from now on (only while not logged in)."""
        self._submit(self._configure(host, port, ws_url))

    async def _configure(self, host: str, port: int, ws_url: str) -> None:
        if self._alias is None:
            if (host, port) != (self._host, self._port):
                await self._drop_client()
            self._host, self._port = host, port
        self._use_normaliser(ws_url)

    def register(self, full_name: str, alias: str, birth_date: str, password: str) -> None:
        """REGISTER with a password; `birth_date` is DD/MM/YYYY. Does not log in."""
        self._submit(self._register(full_name, alias, birth_date, password))

    async def _register(self, full_name: str, alias: str, birth_date: str, password: str) -> None:
        if await self._account_call(
            "REGISTER", alias, lambda client: client.register(alias, full_name, birth_date, password)
        ):
            self._emit(OperationDone("REGISTER", alias, OK))

    def log_in(self, alias: str, password: str) -> None:
        """LOG IN with the password; then watch presence."""
        self._submit(self._log_in(alias, password))

    async def _log_in(self, alias: str, password: str) -> None:
        if self._alias is not None:
            self._emit(OperationDone("LOG IN", alias, None, f"already logged in as {self._alias}"))
            return
        if not await self._account_call("LOG IN", alias, lambda client: client.login(alias, password)):
            return
        client = self._client
        if client is None:  # lost for good in the meantime (reported as such)
            return
        self._alias = client.alias or alias
        self._emit(OperationDone("LOG IN", self._alias, OK))
        self._emit(ConnectionChanged(self._alias))
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.subscribe()
        except (TimeoutError, SessionClientError, OSError) as exc:
            error = self._reason(exc)
            if isinstance(exc, TimeoutError):
                error = "no answer"
            self._emit(UsersListed(None, error=f"presence unavailable: {error}", manual=True))
            return
        self._emit(PresenceUpdate(tuple(sorted(client.online))))

    def log_out(self) -> None:
        """LOG OUT (the session's token is revoked) and close the connection. If the server cannot
        be told, the connection is closed anyway."""
        self._submit(self._log_out())

    async def _log_out(self) -> None:
        alias, client = self._alias, self._client
        if alias is None or client is None:
            self._emit(OperationDone("LOG OUT", "", None, "not logged in"))
            return
        error, error_code = "", None
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.logout()
        except TimeoutError as exc:
            _forget_traceback(exc)
            error = f"no answer from {self._where} within {self._timeout_s:g} s"
        except SessionError as exc:
            error, error_code = self._reason(exc), exc.code
        except (SessionClientError, OSError) as exc:
            error = self._reason(exc)
        self._alias = None
        await self._drop_client()
        if error:
            self._emit(OperationDone("LOG OUT", alias, None, error, error_code))
            self._emit(ConnectionChanged(None, f"the server could not be told ({error})"))
        else:
            self._emit(OperationDone("LOG OUT", alias, OK))
            self._emit(ConnectionChanged(None))

    def unregister(self, alias: str, password: str) -> None:
        """Delete the account `alias` (its password confirms it)."""
        self._submit(self._unregister(alias, password))

    async def _unregister(self, alias: str, password: str) -> None:
        client = self._client
        if alias == self._alias and client is not None:
            if await self._account_call(
                "UNREGISTER", alias, lambda own: own.delete_account(password), client
            ):
                self._alias = None
                await self._drop_client()
                self._emit(ConnectionChanged(None))
                self._emit(OperationDone("UNREGISTER", alias, OK))
            return

        async def log_in_and_delete(other: SessionClient) -> None:
            await other.login(alias, password)
            await other.delete_account(password)

        try:
            other = await SessionClient.connect_any(
                self._host,
                self._port,
                on_event=lambda event: None,
                connect_timeout_s=self._timeout_s,
                client_name=CLIENT_NAME,
            )
        except (SessionClientError, OSError) as exc:
            self._emit(OperationDone("UNREGISTER", alias, None, self._reason(exc)))
            return
        try:
            if await self._account_call("UNREGISTER", alias, log_in_and_delete, other):
                self._emit(OperationDone("UNREGISTER", alias, OK))
        finally:
            await other.close()

    def send(self, local_id: int, dest: str, text: str, attachment_path: str | None = None) -> None:
        """Normalise `text`, upload the file at `attachment_path` (if any), then send both to `dest`;
        reported as a SendDone with `local_id`."""
        self._submit(self._send(local_id, dest, text, attachment_path))

    async def _send(self, local_id: int, dest: str, text: str, attachment_path: str | None) -> None:
        # One at a time, in the order asked for: a recipient's ids follow the order of acceptance.
        async with self._send_lock:
            client = self._client
            if client is None or client.closed or self._alias is None:
                self._emit(SendDone(local_id, dest, text, None, error="not logged in"))
                return
            if text.strip():
                text = await self._normalise(text)
            attached: AttachedFile | None = None
            try:
                if attachment_path:
                    attached = await self._upload(client, Path(attachment_path))
                accepted = await client.send(dest, text, attachment=attached.attachment_id if attached else 0)
            except SessionError as exc:
                error = self._reason(exc)
                self._emit(SendDone(local_id, dest, text, None, error=error, error_code=exc.code))
                return
            except (SessionClientError, OSError, ValueError, _Refused) as exc:
                self._emit(SendDone(local_id, dest, text, None, error=self._reason(exc)))
                return
        self._emit(SendDone(local_id, dest, text, OK, accepted.message_id, attachment=attached))

    async def _upload(self, client: SessionClient, path: Path) -> AttachedFile:
        """Upload the file; _Refused (in words) if it cannot be read or is too large."""
        name = _short_name(path.name)
        limit = client.welcome.max_attachment_bytes
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size > limit:
                raise _Refused(too_big(name, size, limit))
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            _forget_traceback(exc)
            raise _Refused(f"cannot read {path}: {os_reason(exc)}") from None
        if len(data) > limit:  # it grew meanwhile
            raise _Refused(too_big(name, len(data), limit))
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        attachment_id = await client.upload(name, media_type, data)
        return AttachedFile(attachment_id, name, len(data), media_type)

    def mark_read(self, message_ids: list[int]) -> None:
        """Tell the server these received messages were read (their senders get read receipts)."""
        self._submit(self._mark_read(message_ids))

    async def _mark_read(self, message_ids: list[int]) -> None:
        client = self._client
        if client is None or client.closed or self._alias is None:
            return
        try:
            await client.mark_read(message_ids)
        except (SessionClientError, ValueError) as exc:  # nothing to tell: they come again, unread
            log.debug("mark_read failed: %s", self._reason(exc))

    def connected_users(self, *, manual: bool = False) -> None:
        """Who is online, as the presence subscription keeps it (the server is not asked)."""
        self._submit(self._connected_users(manual))

    async def _connected_users(self, manual: bool) -> None:
        client = self._client
        if client is None or self._alias is None:
            self._emit(UsersListed(None, error="not logged in", manual=manual))
            return
        self._emit(UsersListed(OK, tuple(sorted(client.online)), manual=manual))

    def save_attachment(self, attachment_id: int, path: str) -> None:
        """Fetch the attachment and write it to `path`; reported as AttachmentSaved."""
        self._submit(self._save_attachment(attachment_id, path))

    async def _save_attachment(self, attachment_id: int, path: str) -> None:
        client = self._client
        if client is None or client.closed or self._alias is None:
            self._emit(AttachmentSaved(attachment_id, path, error="not logged in"))
            return
        try:
            data = await client.fetch(attachment_id)
        except (SessionClientError, OSError) as exc:
            self._emit(AttachmentSaved(attachment_id, path, error=self._reason(exc)))
            return
        try:
            await asyncio.to_thread(Path(path).write_bytes, data)
        except OSError as exc:
            _forget_traceback(exc)
            self._emit(AttachmentSaved(attachment_id, path, error=f"cannot write {path}: {os_reason(exc)}"))
            return
        self._emit(AttachmentSaved(attachment_id, path, len(data)))

    # -- the end ------------------------------------------------------------------------------------

    async def _close(self, disconnect: bool) -> None:
        client = self._client
        if disconnect and client is not None and self._alias is not None and client.connected:
            try:
                async with asyncio.timeout(min(self._timeout_s, LOGOUT_ON_CLOSE_S)):
                    await client.logout()
            except (TimeoutError, SessionClientError, OSError) as exc:  # closing anyway
                _forget_traceback(exc)
        self._alias = None
        await self._drop_client()

    async def _final_close(self) -> None:
        await self._drop_client()
