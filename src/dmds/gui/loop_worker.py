"""The desktop client's network side: an asyncio event loop in a thread of its own.

Threading model
---------------
Qt widgets live in the GUI thread and must never wait for the network. A worker starts a daemon
thread running an asyncio event loop; that loop owns the protocol's client (in classic mode the
`ClassicClient`, and so the push listener it opens on CONNECT; in session mode the `SessionClient`)
and the SOAP `Normaliser`. The GUI thread calls the worker's public methods, which only schedule a
coroutine on the loop (`asyncio.run_coroutine_threadsafe`) and return at once. Each coroutine
reports what happened as one event object (`dmds.gui.events`) through the Qt signal `report`.
The worker is a QObject of the GUI thread, so a signal emitted from the loop's thread reaches the
window's slot as a queued call in the GUI thread, in the order the events were emitted.

Nothing but the loop touches the client; the window keeps its own copy of the state (the
connected alias, whether the server answers) from the events.

`LoopWorker` is that machinery (the thread, the loop, the signal, the normaliser, the clean stop);
`dmds.gui.classic_worker.ClassicWorker` is the classic protocol's worker on it, and
`dmds.gui.session_worker.SessionWorker` the session protocol's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from PySide6.QtCore import QObject, Signal

from dmds.client.normalise import TextNormaliser
from dmds.gui.events import NormaliserChanged, WorkerEvent
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

__all__ = ["LoopWorker", "weak_callback"]

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
