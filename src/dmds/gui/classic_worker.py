"""The desktop client's network side in classic mode: a `ClassicClient` (and the push listener it
opens on CONNECT) owned by the worker's loop (`dmds.gui.loop_worker`).

Every operation is one request to the server; the connected users are polled (the window asks
every few seconds). A failure to reach the server is reported once (`ServerReachability`), and again
when it answers.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from PySide6.QtCore import QObject

from dmds.client.classic import (
    DEFAULT_TIMEOUT_S,
    ClassicClient,
    ClassicClientError,
    ClassicStateError,
    request,
)
from dmds.client.normalise import TextNormaliser
from dmds.gui.events import (
    ConnectionChanged,
    MessageArrived,
    OperationDone,
    ReceiptArrived,
    SendDone,
    ServerReachability,
    UsersListed,
)
from dmds.gui.loop_worker import LoopWorker, weak_callback
from dmds.protocols.classic import Disconnect, MessagePush, Push, ReceiptPush

__all__ = ["ClassicWorker"]


class ClassicWorker(LoopWorker):
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
