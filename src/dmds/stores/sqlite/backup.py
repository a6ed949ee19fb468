"""Backups of the SQLite store: a consistent copy of the live database, made by the server that owns it.

Theory of operation
-------------------
The store opens its database with locking_mode=EXCLUSIVE in WAL mode: the WAL index lives in the
server's heap, and no other connection, in that process or another, can even read the file while
the server runs ("database is locked"). So a live store cannot be copied from outside: the server
copies it, from its own connection, with SQLite's online backup API (`sqlite3_backup_step`, which
Python's `Connection.backup` calls), and `dmds backup` asks it to (`dmds.server.control`).

The copy goes `backup_step_pages` pages per step. A step runs only in a *turn* of the store
(`SqliteStore.turn`): between two batches, with no transaction open and no commit in flight, so it
never reads a page a batch has written but not committed. Between steps the store serves its
batches as usual. Because the backup runs on the same connection as the writes, SQLite copies each
page a later commit changes into the copy as it commits (a backup read by another connection would
start again instead), and a rolled-back batch makes it start again. The finished copy is therefore
the database after the last commit before the final step: every request acknowledged before the
backup began is in it, nothing uncommitted is, and the live server paused for one step at a time.

Python runs every step of `Connection.backup` in one call on one thread: a worker thread makes the
call, and its progress callback, which runs between steps, is where it waits for the next turn. A
step runs with the GIL released: the event loop keeps serving connections while it copies, and
only the store's batches wait. After a step the next waits three times as long (STEP_GAP): back to
back, steps and batches alternated and the store's throughput fell to a fifth while the copy ran.

The copy is written to a temporary file beside its destination (no journal: a crash leaves a
temporary file, never a half backup), fdatasync'ed after each step outside the store's turn (one
fsync of the whole file at the end queued the store's commits behind it), made self-contained
(rollback journal mode, no -wal beside it), checked (`PRAGMA integrity_check` and the dmds schema:
seconds of CPU for a large store, on the worker thread at the lowest priority), and only then given
its name: linked there (which fails if something has that name), or with `force` renamed over it.
So a backup file is whole or absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from dmds.errors import StoreError

#: The tables every dmds schema since version 1 has: a file without them is not a dmds store.
REQUIRED_TABLES = ("users", "messages")
#: After a step of d seconds, the next waits STEP_GAP * d: the store's batches get at least
#: STEP_GAP / (1 + STEP_GAP) of its time while a backup runs.
STEP_GAP = 3.0
#: fdatasync the copy after each step (see write_backup).
PROGRESSIVE_SYNC = True
#: The nice value of the worker thread once the copy is made (the lowest priority).
CHECK_NICE = 19
#: A rolled-back batch makes the copy start again; past this many times the store is failing anyway.
MAX_RESTARTS = 10
#: sqlite3_backup_step's result when more pages remain (SQLITE_OK; BUSY and LOCKED retry the step).
_MORE = (sqlite3.SQLITE_OK, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class BackupError(StoreError):
    """A backup could not be made, or a file is not one that can be restored (the message says why)."""


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """What a checked copy of a store holds."""

    schema: int
    users: int
    messages: int


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: str
    bytes: int
    pages: int
    steps: int
    schema: int
    users: int
    messages: int
    #: seconds from the first step to the last (the copy itself)
    copy_s: float
    #: seconds from the request to the file in place (copy, check, fsync)
    total_s: float
    #: the longest time the store's batches waited for one step
    longest_step_s: float
    #: times the copy started again from its first page (a batch of the store was rolled back)
    restarts: int = 0
    #: seconds the integrity check of the copy took, and its last fsync
    check_s: float = 0.0
    sync_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.path}: {self.bytes:,} bytes, schema {self.schema}, {self.users:,} users, "
            f"{self.messages:,} messages; copied in {self.copy_s:.2f} s ({self.steps} steps, the longest "
            f"{1e3 * self.longest_step_s:.1f} ms), checked in {self.check_s:.2f} s, last fsync "
            f"{self.sync_s:.2f} s, {self.total_s:.2f} s in all"
        )


def latest_schema() -> int:
    """The highest schema version this code knows (its last migration)."""
    folder = resources.files("dmds.stores.sqlite").joinpath("migrations")
    return max(int(e.name.split("_", 1)[0]) for e in folder.iterdir() if e.name.endswith(".sql"))


def inspect(conn: sqlite3.Connection) -> StoreSummary:
    """Check that `conn` holds a whole dmds store that this code can open. Raises BackupError."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check(10)")]
        if problems != ["ok"]:
            raise BackupError(f"integrity check failed: {'; '.join(map(str, problems))}")
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if schema == 0 or not tables.issuperset(REQUIRED_TABLES):
            raise BackupError("not a dmds store: a SQLite database without the dmds tables")
        latest = latest_schema()
        if schema > latest:
            raise BackupError(
                f"schema version {schema} is newer than this dmds knows ({latest}): use a newer dmds"
            )
        users = int(conn.execute("SELECT count(*) FROM users").fetchone()[0])
        messages = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise BackupError(f"not a SQLite database, or a damaged one: {exc}") from exc
    return StoreSummary(schema, users, messages)


class Steps(Protocol):
    """How `write_backup` shares the source connection: `start` before the first step (and returns
    the connection), `between` after each step but the last, `copied` once the copy is done, and
    `placing` before the file gets its name (the last moment to abort: it raises). Between two
    steps: `stepped` (the source is free from here) then `wait` (for the next step's turn)."""

    def start(self) -> sqlite3.Connection: ...
    def stepped(self, remaining: int, total: int) -> None: ...
    def wait(self) -> None: ...
    def copied(self) -> None: ...
    def placing(self) -> None: ...


class Direct:
    """A source connection this thread has to itself (a stopped store: `dmds backup` opens it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def start(self) -> sqlite3.Connection:
        return self._conn

    def stepped(self, remaining: int, total: int) -> None:
        pass

    def wait(self) -> None:
        pass

    def copied(self) -> None:
        pass

    def placing(self) -> None:
        pass


def target_path(dest: Path) -> Path:
    """`dest`, or a new file named by the time (UTC) in it if it is a directory."""
    if dest.is_dir():
        return dest / time.strftime("dmds-%Y%m%dT%H%M%SZ.sqlite3", time.gmtime())
    return dest


def check_target(target: Path, force: bool, source_file: str = "") -> None:
    """Refuse before any copying what would fail or do harm at the end."""
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    if target.is_dir():
        raise BackupError(f"{target} is a directory")
    live = os.path.realpath(source_file) if source_file else ""
    if live and os.path.realpath(target) in {live, f"{live}-wal", f"{live}-shm", f"{live}-journal"}:
        raise BackupError(f"{target} is the live database (or its journal), not a place for a backup")
    if target.exists() and not force:
        raise BackupError(f"{target} exists (--force to replace it)")


def write_backup(dest: Path, steps: Steps, *, force: bool, step_pages: int) -> BackupReport:
    """Copy the database `steps` lends into `dest` (see the module's theory of operation). Blocking:
    run it on a thread of its own when the source is live."""
    started = time.perf_counter()
    target = target_path(dest)
    check_target(target, force)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # Made here, not by SQLite: mode 0600 (a backup holds password hashes and every message).
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc}") from exc
    copy = sqlite3.connect(tmp, isolation_level=None, check_same_thread=False)
    try:
        # Neither a journal nor an fsync while the copy is made: the last step commits the copy
        # inside the store's turn, and the file is fsynced below, after the turn.
        copy.execute("PRAGMA journal_mode=OFF")
        copy.execute("PRAGMA synchronous=OFF")
        source = steps.start()
        source_file = source.execute("PRAGMA database_list").fetchone()[2]
        check_target(target, force, source_file)
        count = 0
        copying = time.perf_counter()

        fd = os.open(tmp, os.O_RDONLY)

        def progress(status: int, remaining: int, total: int) -> None:
            nonlocal count
            count += 1
            if status in _MORE:
                steps.stepped(remaining, total)
                if PROGRESSIVE_SYNC:
                    # What this step wrote goes to disk now, a few MB at a time, rather than in
                    # one fsync at the end, which queued the store's commits behind it.
                    os.fdatasync(fd)
                steps.wait()

        try:
            source.backup(copy, pages=step_pages, progress=progress)
            steps.copied()
            copy_s = time.perf_counter() - copying
            copy.execute("PRAGMA journal_mode=DELETE")  # the header says WAL, as the source's does
            checking = time.perf_counter()
            summary = inspect(copy)
            check_s = time.perf_counter() - checking
            pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
            copy.close()
            syncing = time.perf_counter()
            os.fsync(fd)
            sync_s = time.perf_counter() - syncing
        finally:
            os.close(fd)
        size = tmp.stat().st_size
        steps.placing()
        _place(tmp, target, force)
    except BaseException:
        copy.close()
        for leftover in (Path(f"{tmp}{suffix}") for suffix in ("", "-journal", "-wal", "-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    return BackupReport(
        str(target), size, pages, count, summary.schema, summary.users, summary.messages,
        copy_s, time.perf_counter() - started, 0.0, check_s=check_s, sync_s=sync_s,
    )  # fmt: skip


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, target: Path, force: bool) -> None:
    """Give the finished file its name, atomically; without `force`, never over an existing file."""
    try:
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if the name was taken meanwhile: no check-then-rename race
            except FileExistsError:
                raise BackupError(f"{target} exists (--force to replace it)") from None
            except OSError:  # a file system without hard links
                if target.exists():
                    raise BackupError(f"{target} exists (--force to replace it)") from None
                os.rename(tmp, target)
            else:
                tmp.unlink()
        _fsync(target.parent)
    except OSError as exc:
        raise BackupError(f"cannot put the backup at {target}: {exc}") from exc


class _Turns(Protocol):
    def turn(self) -> contextlib.AbstractAsyncContextManager[sqlite3.Connection]: ...


class _Stepped:
    """A step's outcome, posted by the worker thread: more to copy, or the copy is done."""

    __slots__ = ("done", "remaining", "total")

    def __init__(self, remaining: int, total: int, done: bool) -> None:
        self.remaining, self.total, self.done = remaining, total, done


class _Aborted(Exception):
    """Raised in the progress callback to stop the copy (the caller was cancelled)."""


class OnlineBackup:
    """One backup of a live store: the loop gives the worker thread one step per turn of the store.

    The worker posts each step's outcome to a future of the loop; the loop holds the turn until it
    arrives, even when cancelled (the step is running: the store's connection is not free before it
    ends). Cancelled, it lets the worker abort at its next callback, in one more turn."""

    def __init__(
        self,
        store: _Turns,
        dest: Path,
        force: bool,
        step_pages: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self._store = store
        self._dest = dest
        self._force = force
        self._step_pages = step_pages
        self._progress = progress
        self._loop = asyncio.get_running_loop()
        self._go = threading.Semaphore(0)
        self._aborted = False
        self._copy_done = False
        self._source: sqlite3.Connection | None = None
        self._step: asyncio.Future[_Stepped] = self._loop.create_future()
        self._finished: asyncio.Future[BackupReport] = self._loop.create_future()

    async def run(self) -> BackupReport:
        started = time.perf_counter()
        thread = threading.Thread(target=self._work, name="dmds-backup", daemon=True)
        thread.start()
        longest = 0.0
        total = copied = restarts = 0
        try:
            while True:
                stepped, held = await self._turn()
                longest = max(longest, held)
                total = stepped.total or total
                if not stepped.done:
                    # A step moves the copy on by its pages; one that did not, started it again
                    # (a batch was rolled back: SQLite copies from page 1 again).
                    if stepped.total - stepped.remaining <= copied:
                        restarts += 1
                        if restarts > MAX_RESTARTS:
                            raise BackupError(
                                f"the copy started again {restarts} times: batches of the store keep "
                                "failing (see the log); backup abandoned"
                            )
                    copied = stepped.total - stepped.remaining
                if self._progress is not None:
                    self._progress(stepped.remaining, total)
                if stepped.done:
                    break
                if STEP_GAP > 0:
                    # Leave the store most of its time between steps: back to back, steps and
                    # batches alternate, and under load the batches' queue grows while it lasts.
                    await asyncio.sleep(held * STEP_GAP)
            report = await asyncio.shield(self._finished)  # a cancelled await cancels what it awaits
        except asyncio.CancelledError:
            self._aborted = True
            await self._stop()
            raise
        except BaseException:
            await self._stop()
            raise
        finally:
            self._source = None
        fields = report.as_dict() | {
            "total_s": time.perf_counter() - started,
            "longest_step_s": longest,
            "restarts": restarts,
        }
        return BackupReport(**fields)

    async def _turn(self) -> tuple[_Stepped, float]:
        """One step of the worker, in one turn of the store: (its outcome, seconds the turn lasted).
        The turn ends when the step does, or when the worker ends (it failed)."""
        async with self._store.turn() as conn:
            held = time.perf_counter()
            self._source = conn
            self._step = self._loop.create_future()
            self._go.release()
            cancelled = False
            while not (self._step.done() or self._finished.done()):
                try:
                    # wait() cancels neither future when this task is cancelled.
                    await asyncio.wait((self._step, self._finished), return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    cancelled = True  # the step runs on: the connection is not free before it ends
            held = time.perf_counter() - held
        if cancelled:
            raise asyncio.CancelledError
        if not self._step.done():
            self._finished.result()  # the worker ended within the step: raises its error
            raise BackupError("backup ended without finishing its copy")
        stepped = self._step.result()
        self._copy_done = stepped.done
        return stepped, held

    async def _stop(self) -> None:
        """Let the worker end and wait for it: if it waits for a turn, it gets one, in which it
        aborts (at its progress callback); if it is checking the finished copy, that runs to its end."""
        self._aborted = True
        while not (self._finished.done() or self._copy_done):
            with contextlib.suppress(Exception):
                await self._turn()
        await asyncio.wait((self._finished,))  # not `await`: cancelling this task must not cancel it
        if not self._finished.cancelled():
            self._finished.exception()  # retrieved: its error is not the one to report

    # -- on the worker thread ---------------------------------------------------------------------------

    def start(self) -> sqlite3.Connection:
        self._wait()
        assert self._source is not None
        return self._source

    def stepped(self, remaining: int, total: int) -> None:
        self._post(self._step, _Stepped(remaining, total, False))

    def wait(self) -> None:
        self._wait()

    def copied(self) -> None:
        self._post(self._step, _Stepped(0, 0, True))
        # The check of the copy is seconds of CPU for a large store, and the store no longer waits
        # for this thread: let the server's threads go first (Linux: a thread's own nice value).
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECK_NICE)

    def placing(self) -> None:
        if self._aborted:
            raise _Aborted("backup cancelled")

    def _wait(self) -> None:
        self._go.acquire()
        if self._aborted:
            raise _Aborted("backup cancelled")

    def _work(self) -> None:
        try:
            report = write_backup(self._dest, self, force=self._force, step_pages=self._step_pages)
        except BaseException as exc:  # noqa: BLE001 - every ending must reach the loop, which waits on it
            error = exc if isinstance(exc, StoreError) else BackupError(f"backup failed: {exc}")
            self._post(self._finished, error)  # ends the turn it ended in, if any
        else:
            self._post(self._finished, report)

    def _post(self, fut: asyncio.Future[Any], outcome: Any) -> None:
        def settle() -> None:
            if fut.done():
                return
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

        self._loop.call_soon_threadsafe(settle)
