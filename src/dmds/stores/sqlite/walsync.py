"""With --sync full: the WAL's fdatasync in a helper process, so that no thread of the server waits
for the disk and then for the GIL.

SQLite's own way, synchronous=FULL, syncs the WAL inside COMMIT. Run on a thread, as it was, that
thread needs the GIL to take each COMMIT and again after the fsync, and every time the event loop
released the GIL meanwhile it woke the thread to lose the race once more: a quarter of the server's
CPU went to futex calls and context switches (perf, REGISTER and session SEND alike). Instead the
COMMIT runs on the loop with synchronous=NORMAL, which appends the WAL frames to the page cache and
syncs nothing, and `fsyncer.py`, a separate interpreter with a GIL of its own, fdatasyncs the WAL
file when asked, over a socket pair the loop polls like any other. Each answer covers every commit
asked for before its fdatasync began, and the answers come in order (GroupCommit asks for one at
a time). What an answered commit has is what synchronous=FULL gives: its WAL
frames on disk before any of its requests is answered (checkpoints sync the WAL and the database
themselves, as in NORMAL mode).

Until the helper is ready (it takes an interpreter's start), and if it dies until a new one is,
the loop fdatasyncs itself, blocking for the fsync's duration. A failed fdatasync leaves the page
cache in doubt (Linux may drop the pages it could not write, and a later fdatasync would not
report them), so no later commit could be trusted either: the owner fails the store from then on,
as PostgreSQL panics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dmds.stores.sqlite import fsyncer

log = logging.getLogger(__name__)

#: Helpers started again after one died, at most, before the loop syncs alone for good.
RESPAWNS = 3
#: Seconds a stopping store waits for its helper to exit after closing its socket.
EXIT_WAIT_S = 5.0


class WalSync:
    """Syncs the WAL of one database after each commit; `settle(count, ok)` hears of the commits it
    was asked for, oldest first."""

    def __init__(
        self, wal_path: str, loop: asyncio.AbstractEventLoop, settle: Callable[[int, bool], None]
    ) -> None:
        self._path = wal_path
        self._loop = loop
        self._settle = settle
        # The loop's own descriptor, for the syncs it does itself. O_CREAT: SQLite creates the file
        # on first use anyway, and an empty WAL is a valid one.
        self._fd = os.open(wal_path, os.O_RDONLY | os.O_CREAT, 0o644)
        self._sock: socket.socket | None = None
        self._procs: list[subprocess.Popen[bytes]] = []  # every helper started, reaped at close
        self._ready = False
        self._asked = 0  # requests sent to the helper, not answered yet
        self._respawns = 0
        self._spawn()

    @property
    def ready(self) -> bool:
        """A helper syncs the commits (else the loop does, in `request`)."""
        return self._ready

    def request(self) -> bool | None:
        """A commit was written. None: it will be settled through `settle`; else it was synced
        here and then (True: it is durable; False: the fdatasync failed)."""
        if self._ready and self._sock is not None:
            try:
                self._sock.send(fsyncer.OK)
            except OSError:
                self._lost("cannot be written to")
            else:
                self._asked += 1
                return None
        return self._sync_here()

    async def close(self) -> None:
        """Stop the helper (the owner first waits for the answers it asked for)."""
        if not self._ready and self._procs:
            self._procs[-1].kill()  # still starting: nothing of ours is in its hands
        self._drop()  # a ready helper reads EOF and exits
        os.close(self._fd)
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)

    # -- the helper -------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        mine, theirs = socket.socketpair()
        script = Path(fsyncer.__file__)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(script), str(theirs.fileno()), self._path],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("cannot start the WAL fsync helper (%s): the event loop syncs itself", exc)
            mine.close()
            return
        finally:
            theirs.close()
        self._procs.append(proc)
        mine.setblocking(False)
        self._sock = mine
        self._loop.add_reader(mine.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            answers = self._sock.recv(fsyncer.READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            answers = b""
        if not answers:
            self._lost("exited")
            return
        if not self._ready:
            if not answers.startswith(fsyncer.READY):
                self._lost("answered before it was ready")
                return
            self._ready = True
            answers = answers[1:]
        failed = answers.count(fsyncer.FAILED)
        self._asked -= len(answers)
        if failed:
            # Answers are in order, and after a failure nothing is trusted: all of them fail.
            self._settle(len(answers), False)
        elif answers:
            self._settle(len(answers), True)

    def _lost(self, how: str) -> None:
        """The helper is gone: sync what it was asked for here, and start another."""
        log.warning("the WAL fsync helper %s; the event loop syncs until a new one is ready", how)
        self._drop()
        if self._asked:
            asked, self._asked = self._asked, 0
            self._settle(asked, self._sync_here())
        if self._respawns < RESPAWNS:
            self._respawns += 1
            self._spawn()

    def _drop(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._ready = False

    def _sync_here(self) -> bool:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            log.error("fdatasync of %s failed: %s", self._path, exc)
            return False
        return True
