"""The workers on their own: they are freed by reference counting, never left to the cyclic GC.

Python's cyclic GC runs in whichever thread happens to allocate, often a worker's asyncio thread;
a Qt object it frees there crashes the process (shiboken defers the deletion to the GUI thread and
fails). So no worker may sit in a reference cycle: not through its client's callback, and not
through the traceback of an error that went through it.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from pytestqt.qtbot import QtBot

from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.events import ConnectionChanged, OperationDone, WorkerEvent
from dmds.gui.session_worker import SessionWorker
from tests.conftest import ServerProcess
from tests.gui.conftest import HOST, NO_WS, TIMEOUT_S
from tests.gui.helpers import WAIT_MS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cyclic_gc")
def test_a_session_worker_is_freed_by_reference_counting(qtbot: QtBot, server: ServerProcess) -> None:
    events: list[WorkerEvent] = []
    worker = SessionWorker(HOST, server.session_port, NO_WS, timeout_s=TIMEOUT_S)
    worker.report.connect(events.append)

    def done() -> list[OperationDone]:
        return [e for e in events if isinstance(e, OperationDone)]

    worker.register("Juan Pérez", "juan123", "01/02/2000", "correct horse battery")
    qtbot.waitUntil(lambda: len(done()) == 1, timeout=WAIT_MS)
    worker.log_in("juan123", "not the password")  # refused: an exception goes through the worker
    qtbot.waitUntil(lambda: len(done()) == 2, timeout=WAIT_MS)
    worker.log_in("juan123", "correct horse battery")
    qtbot.waitUntil(lambda: any(isinstance(e, ConnectionChanged) for e in events), timeout=WAIT_MS)
    assert [(e.operation, e.code) for e in done()] == [("REGISTER", 0), ("LOG IN", None), ("LOG IN", 0)]
    worker.stop()
    ref = weakref.ref(worker)
    del worker
    assert ref() is None, "the worker is in a reference cycle"


@pytest.mark.usefixtures("no_cyclic_gc")
def test_a_classic_worker_is_freed_by_reference_counting(qtbot: QtBot, server: ServerProcess) -> None:
    events: list[WorkerEvent] = []
    worker = ClassicWorker(HOST, server.port, NO_WS, listen_host=HOST, timeout_s=TIMEOUT_S)
    worker.report.connect(events.append)
    worker.register("Juan Pérez", "juan123", "01/02/2000")
    worker.connect_as("juan123")  # opens the push listener, whose callback is the worker's
    qtbot.waitUntil(lambda: any(isinstance(e, ConnectionChanged) for e in events), timeout=WAIT_MS)
    worker.stop()
    ref = weakref.ref(worker)
    del worker
    assert ref() is None, "the worker is in a reference cycle"
