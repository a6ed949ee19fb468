"""The desktop client's network side: an asyncio event loop in a thread of its own.

Threading model
---------------
Qt widgets live in the GUI thread and must never wait for the network. A worker starts a daemon
thread running an asyncio event loop; that loop owns the protocol's client (in classic mode the
`ClassicClient`, and so the push listener it opens on CONNECT; in session mode the `SessionClient`)
and the SOAP `Normaliser`. The GUI thread calls the worker's public methods, which only schedule a
coroutine on the loop (`asyncio.run_coroutine_threadsafe`) and return at once. Each coroutine
reports what happened as one event object (the dataclasses below) through the Qt signal `report`.
The worker is a QObject of the GUI thread, so a signal emitted from the loop's thread reaches the
window's slot as a queued call in the GUI thread, in the order the events were emitted.

Nothing but the loop touches the session; the window keeps its own copy of the state (the
connected alias, whether the server answers) from the events.

`LoopWorker` is that machinery (the thread, the loop, the signal, the normaliser, the clean stop);
`SessionWorker` is the classic protocol's worker on it, and `dmds.gui.session_worker` has the session
protocol's. The events below serve both; the fields only the session protocol fills have defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from PySide6.QtCore import QObject, Signal

from dmds.client.classic import (
    DEFAULT_TIMEOUT_S,
    ClassicClient,
    ClassicClientError,
    ClassicStateError,
    request,
)
from dmds.client.normalise import TextNormaliser
from dmds.gui.conversations import AttachedFile
from dmds.protocols.classic import Disconnect, MessagePush, Push, ReceiptPush
from dmds.protocols.session.codes import ErrorCode
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

__all__ = [
    "AttachmentSaved",
    "ConnectionChanged",
    "LinkChanged",
    "LoopWorker",
    "MessageArrived",
    "NormaliserChanged",
    "OperationDone",
    "PresenceUpdate",
    "ReceiptArrived",
    "SendDone",
    "ServerLimits",
    "ServerReachability",
    "SessionWorker",
    "UsersListed",
    "WorkerEvent",
    "weak_callback",
]

log = logging.getLogger(__name__)

#: How long `LoopWorker.stop` waits for the loop to close the session and end.
STOP_TIMEOUT_S: Final = 5.0

_T = TypeVar("_T")


def weak_callback(method: Callable[[_T], None]) -> Callable[[_T], None]:
    """`method`, a bound method of a worker, as a callback that does not keep the worker alive.

    A client holding a plain bound method would close a reference cycle (worker -> client ->
    callback -> worker). Cycles are freed by Python's cyclic GC, which runs in whichever thread
    happens to allocate, often a worker's loop thread; a Qt object freed there crashes the process
    (shiboken defers its deletion to the GUI thread and fails). Without the cycle, reference
    counting frees the worker in the GUI thread, with its window.
    """
    ref = weakref.WeakMethod(method)

    def call(arg: _T) -> None:
        bound = ref()
        if bound is not None:
            bound(arg)

    return call


@dataclass(frozen=True)
class WorkerEvent:
    """Base of everything the worker reports."""


@dataclass(frozen=True)
class OperationDone(WorkerEvent):
    """REGISTER, UNREGISTER, CONNECT or DISCONNECT (LOG IN, LOG OUT in session mode) finished:
    `code` from the server, or `error`.

    `code` is None when the server could not be asked or, in session mode, refused (`error` says why
    in words; `error_code` is then the session protocol's code, if the server answered one).
    """

    operation: str
    alias: str
    code: int | None
    error: str = ""
    error_code: ErrorCode | None = None


@dataclass(frozen=True)
class SendDone(WorkerEvent):
    """A SEND finished. `text` is what was sent (normalised); `message_id` means something if code is 0."""

    local_id: int
    dest: str
    text: str
    code: int | None
    message_id: int = 0
    error: str = ""
    #: session mode: the file sent with the message, as uploaded
    attachment: AttachedFile | None = None
    #: session mode: the protocol's code when the server refused the message
    error_code: ErrorCode | None = None


@dataclass(frozen=True)
class UsersListed(WorkerEvent):
    """CONNECTEDUSERS finished; `manual` if the person asked (not the refresh timer)."""

    code: int | None
    aliases: tuple[str, ...] = ()
    error: str = ""
    manual: bool = False


@dataclass(frozen=True)
class MessageArrived(WorkerEvent):
    sender: str
    message_id: int
    text: str
    attachment: AttachedFile | None = None


@dataclass(frozen=True)
class ReceiptArrived(WorkerEvent):
    """A receipt for a sent message. Classic: the id alone. Session: `to` names the recipient, and
    `read` tells a read receipt from a delivery receipt."""

    message_id: int
    to: str | None = None
    read: bool = False


@dataclass(frozen=True)
class ConnectionChanged(WorkerEvent):
    """The session's connected alias changed (None: not connected); `reason` if the server ended it."""

    alias: str | None
    reason: str = ""


@dataclass(frozen=True)
class NormaliserChanged(WorkerEvent):
    """The normaliser started or stopped answering; `detail` says why when it is down."""

    available: bool
    detail: str = ""


@dataclass(frozen=True)
class ServerReachability(WorkerEvent):
    """The server stopped answering (or answers again); `detail` is the last failure."""

    reachable: bool
    detail: str = ""


@dataclass(frozen=True)
class PresenceUpdate(WorkerEvent):
    """Session mode: who is online now (sorted). `alias` is who changed (`online` says how), or ""
    when the whole list came (after logging in)."""

    aliases: tuple[str, ...]
    alias: str = ""
    online: bool = False


@dataclass(frozen=True)
class LinkChanged(WorkerEvent):
    """Session mode, while logged in: the connection dropped (`up` False: the client library is
    reconnecting) or is back (`up` True: the session resumed)."""

    up: bool
    detail: str = ""


@dataclass(frozen=True)
class ServerLimits(WorkerEvent):
    """Session mode: the limits the server announced in its Welcome."""

    max_text_bytes: int
    max_attachment_bytes: int


@dataclass(frozen=True)
class AttachmentSaved(WorkerEvent):
    """Session mode: an attachment was fetched and written to `path` (`size` bytes), or `error`."""

    attachment_id: int
    path: str
    size: int = 0
    error: str = ""


class LoopWorker(QObject):
    """The asyncio loop thread, the Qt signal and the SOAP normaliser of one window's network side.

    Subclasses own a protocol's client in the loop, call `_start()` at the end of their `__init__`,
    and say how to close their client (`_close`, `_final_close`).
    """

    #: Every report, a `WorkerEvent`, delivered in the GUI thread.
    report = Signal(object)

    def __init__(
        self, ws_url: str, *, normaliser: TextNormaliser | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._custom_normaliser = normaliser
        self._normaliser: TextNormaliser = normaliser or Normaliser(ws_url)
        self._normaliser_up: bool | None = None  # unknown until the first SEND
        self._loop = asyncio.new_event_loop()
        self._send_lock = asyncio.Lock()  # bound to the loop on first use, in the loop's thread
        self._thread = threading.Thread(target=self._run, name="dmds-gui-network", daemon=True)
        self._stopped = False

    def _start(self) -> None:
        self._thread.start()

    # -- the loop thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # As asyncio.run ends: cancel what is left (a request stuck on a server that does not
            # answer), let it unwind, close the client, then close the loop.
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(self._final_close())
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:  # nothing more can be done about it at the end
                log.debug("worker loop did not end cleanly", exc_info=True)
            finally:
                loop.close()

    async def _final_close(self) -> None:
        """Close what is still open without telling the server anything (the loop is ending)."""

    async def _close(self, disconnect: bool) -> None:
        """Close the client; end the session with the server first if `disconnect`."""

    def _submit(self, coro: Coroutine[Any, Any, None]) -> Future[None] | None:
        if self._stopped or self._loop.is_closed():
            coro.close()
            return None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _emit(self, event: WorkerEvent) -> None:
        if not self._stopped:
            # RuntimeError: the window (and this QObject with it) is gone; nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                self.report.emit(event)

    # -- the normaliser ------------------------------------------------------------------------------

    def _use_normaliser(self, ws_url: str) -> None:
        if self._custom_normaliser is None:
            self._normaliser = Normaliser(ws_url)
            self._normaliser_up = None

    async def _normalise(self, text: str) -> str:
        try:
            normalised = await self._normaliser.anormalise(text)
        except NormaliserUnavailable as exc:
            if self._normaliser_up is not False:
                self._normaliser_up = False
                self._emit(NormaliserChanged(False, str(exc)))
            return text
        if self._normaliser_up is not True:
            self._normaliser_up = True
            self._emit(NormaliserChanged(True))
        return normalised

    # -- the end ------------------------------------------------------------------------------------

    def stop(self, *, disconnect: bool = True, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Close the session (ending it with the server first if `disconnect` and connected) and
        end the thread.

        Blocks the caller for at most about `timeout_s`; afterwards no more events are emitted.
        """
        if self._stopped:
            return
        future = self._submit(self._shutdown(disconnect))
        self._stopped = True
        if future is not None:
            try:
                future.result(timeout_s)
            except Exception:  # a timeout, or a failure we can do nothing about at the end
                log.debug("session did not close cleanly", exc_info=True)
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    async def _shutdown(self, disconnect: bool) -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._close(disconnect)

    @property
    def alive(self) -> bool:
        return not self._stopped and self._thread.is_alive()


class SessionWorker(LoopWorker):
    """The classic protocol's worker: owns one window's `ClassicClient` (and its push listener)."""

    def __init__(
        self,
        host: str,
        port: int,
        ws_url: str,
        *,
        listen_host: str = "0.0.0.0",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        normaliser: TextNormaliser | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(ws_url, normaliser=normaliser, parent=parent)
        self._listen_host = listen_host
        self._timeout_s = timeout_s
        self._session = self._new_session(host, port)
        self._reachable = True
        self._start()

    async def _final_close(self) -> None:
        await self._session.close(disconnect=False)

    async def _close(self, disconnect: bool) -> None:
        await self._session.close(disconnect=disconnect)

    def _new_session(self, host: str, port: int) -> ClassicClient:
        return ClassicClient(
            host,
            port,
            listen_host=self._listen_host,
            on_push=weak_callback(self._on_push),
            timeout_s=self._timeout_s,
        )

    def _on_push(self, push: Push) -> None:
        if isinstance(push, MessagePush):
            self._emit(MessageArrived(push.sender, push.message_id, push.text))
        elif isinstance(push, ReceiptPush):
            self._emit(ReceiptArrived(push.message_id))

    def _server_answered(self) -> None:
        if not self._reachable:
            self._reachable = True
            self._emit(ServerReachability(True))

    def _server_failed(self, exc: ClassicClientError) -> str:
        detail = str(exc)
        if not isinstance(exc, ClassicStateError) and self._reachable:
            self._reachable = False
            self._emit(ServerReachability(False, detail))
        return detail

    async def _forget_connection(self, reason: str) -> None:
        """End the local side of the connection (the listener) without telling the server."""
        if self._session.alias is not None:
            await self._session.close(disconnect=False)
            self._emit(ConnectionChanged(None, reason))

    # -- operations (called in the GUI thread) -----------------------------------------------------

    def configure(self, host: str, port: int, ws_url: str) -> None:
        """Use another server or normaliser from now on (only while not connected)."""
        self._submit(self._configure(host, port, ws_url))

    async def _configure(self, host: str, port: int, ws_url: str) -> None:
        if self._session.alias is None:
            self._session = self._new_session(host, port)
        self._use_normaliser(ws_url)

    def register(self, full_name: str, alias: str, birth_date: str) -> None:
        """REGISTER; `birth_date` is DD/MM/YYYY."""
        self._submit(self._register(full_name, alias, birth_date))

    async def _register(self, full_name: str, alias: str, birth_date: str) -> None:
        await self._operation("REGISTER", alias, self._session.register(full_name, alias, birth_date))

    def unregister(self, alias: str) -> None:
        self._submit(self._unregister(alias))

    async def _unregister(self, alias: str) -> None:
        was = self._session.alias
        await self._operation("UNREGISTER", alias, self._session.unregister(alias))
        if was is not None and self._session.alias is None:
            self._emit(ConnectionChanged(None, "the connected user was unregistered"))

    def connect_as(self, alias: str, *, take_over: bool = False) -> None:
        """CONNECT as `alias`; with `take_over`, DISCONNECT it first (a session left behind)."""
        self._submit(self._connect(alias, take_over))

    async def _connect(self, alias: str, take_over: bool) -> None:
        if take_over:
            session = self._session
            try:
                await request(session.host, session.port, Disconnect(alias), timeout_s=self._timeout_s)
            except ClassicClientError as exc:
                self._emit(OperationDone("CONNECT", alias, None, self._server_failed(exc)))
                return
        try:
            await self._operation("CONNECT", alias, self._session.connect(alias))
        except OSError as exc:  # the push listener could not be opened
            self._emit(
                OperationDone(
                    "CONNECT", alias, None, f"cannot listen for messages on {self._listen_host} ({exc})"
                )
            )
            return
        if self._session.alias is not None:
            self._emit(ConnectionChanged(self._session.alias))

    def disconnect_session(self) -> None:
        """DISCONNECT the connected alias. If the server cannot be told, the local side ends anyway."""
        self._submit(self._disconnect())

    async def _disconnect(self) -> None:
        alias = self._session.alias
        if alias is None:
            self._emit(OperationDone("DISCONNECT", "", None, "not connected"))
            return
        await self._operation("DISCONNECT", alias, self._session.disconnect())
        if self._session.alias is None:
            self._emit(ConnectionChanged(None))
        elif not self._reachable:
            # The server is gone: stop listening; if it still counts us as connected, its next push
            # to the closed listener fails and it counts us as disconnected (classic.md).
            await self._forget_connection("the server could not be told (unreachable)")

    async def _operation(self, operation: str, alias: str, call: Coroutine[Any, Any, int]) -> None:
        try:
            code = await call
        except ClassicClientError as exc:
            self._emit(OperationDone(operation, alias, None, self._server_failed(exc)))
            return
        self._server_answered()
        self._emit(OperationDone(operation, alias, code))

    def send(self, local_id: int, dest: str, text: str) -> None:
        """Normalise `text`, then SEND it to `dest`; reported as a SendDone with `local_id`."""
        self._submit(self._send(local_id, dest, text))

    async def _send(self, local_id: int, dest: str, text: str) -> None:
        # One SEND at a time, in the order they were asked for (the lock's waiters are served first
        # come, first served): the server numbers a recipient's messages in the order it accepts
        # them, and two messages typed one after the other must keep their order.
        async with self._send_lock:
            text = await self._normalise(text)
            try:
                code, message_id = await self._session.send(dest, text)
            except ClassicClientError as exc:
                self._emit(SendDone(local_id, dest, text, None, error=self._server_failed(exc)))
                return
        self._server_answered()
        self._emit(SendDone(local_id, dest, text, code, message_id))

    def connected_users(self, *, manual: bool = False) -> None:
        """CONNECTEDUSERS as the connected alias; `manual` if the person asked for it."""
        self._submit(self._connected_users(manual))

    async def _connected_users(self, manual: bool) -> None:
        try:
            code, aliases = await self._session.connected_users()
        except ClassicClientError as exc:
            self._emit(UsersListed(None, error=self._server_failed(exc), manual=manual))
            return
        self._server_answered()
        self._emit(UsersListed(code, tuple(aliases), manual=manual))
        if code == 1:
            # The server no longer counts us as connected: it restarted (presence is not kept), or a
            # push to our listener failed. Our listener is useless now; the person can CONNECT again.
            await self._forget_connection("the server no longer counts you as connected")
