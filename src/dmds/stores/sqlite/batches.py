"""The SQLite store's engine: jobs run in batches on the loop, one COMMIT each, synced by a helper.

Theory of operation
-------------------
Every call of the store becomes a job (a function of the connection) on one ordered queue. When the
connection is free, the loop thread runs all the waiting jobs (up to `max_batch`) inside one
transaction and COMMITs it, which with synchronous=NORMAL only appends to the WAL in the page cache.
With `--sync full` the batch then waits for `WalSync` (walsync.py), whose helper process fdatasyncs
the WAL: only then are the jobs' futures resolved, so a caller that gets a result knows its change
is durable. Meanwhile the loop goes on serving the network; jobs that arrive wait for the next
batch, so requests that arrive together share one commit and one fsync (group commit). With
`--sync normal` nothing waits. Either way the WAL checkpoints, which do sync, go to a committer
thread.

Why statements and COMMIT on the loop: a statement on a warm page cache takes microseconds, while
each hand-over between threads costs a wake-up and a fight for the GIL (a writer thread that ran
the statements measured 4 to 6 times slower per batch under load; a thread that ran only the COMMIT
and its fsync still cost a quarter of the server's CPU in futex calls and context switches). The
fsync is the part that blocks, on the disk, and the helper, with an interpreter of its own, waits
for it without touching this process's GIL.

The next batch does not start before the helper has answered, although it could (pipelined syncs):
its reads would then see rows a crash can still take back, and a courier must not push those, so
they would wait for the sync anyway; measured, a drain took up to 1.9x as long, and the session SEND
gained nothing.

The rule every job keeps: it raises a domain error (AliasTaken, UnknownUser, LimitExceeded...)
before its first write, so a refused request leaves nothing behind and the others in its batch are
unharmed, with no savepoint per job (a savepoint is two more statements per request, and statements
are the store's main cost). Any other failure, in a job or in the commit, rolls the whole batch back
and fails every request in it with StoreError: nothing is acknowledged that is not committed. A batch
that changed nothing (reads only) has nothing of its own to sync.

Jobs may hold their rows back (`Deferred`): the message path appends rows to lists that are written
with one executemany per table before the commit, or before the next job that does not defer, so
that every job sees what came before it. They may also guess that a unique constraint holds rather
than read first (a send's key is hardly ever a resend's): a batch that breaks one is rolled back and
run again, the jobs now reading first, so a resend costs its batch twice and every other send nothing.

Reads go through the same queue, which keeps one order for everything: a read sees every change
submitted before it. The couriers' reloads rely on that, but for a courier's pages after its first
(`ahead`): those go first in the next batch, since what commits after them is offered to the
courier anyway and the acks queued before them concern pages already pushed. A read that runs
before its batch's first write saw only committed (and synced) rows, so it is answered at once
rather than after the batch's commit.

The PostgreSQL store batches too (`stores/postgresql/engine.py`), but over asyncpg's own awaitable
connection, with no thread and no loop-side statements: the two engines share the idea, not code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dmds.errors import DmdsError, StoreError
from dmds.settings import SyncMode
from dmds.stores.sqlite.walsync import WalSync

if TYPE_CHECKING:
    from dmds.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
#: (job, its future, whether it only defers its writes to the batch (see `Deferred`), the
#: operations it counts for against `max_batch`)
_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool, int]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
#: Commits between two WAL checkpoints, which run on the committer thread (SQLite's automatic ones,
#: inside a COMMIT, would block the loop).
CHECKPOINT_EVERY = 500
#: Seconds lazy housekeeping (forgetting pushed receipts) waits for a batch to ride with: under load
#: it shares the next commit instead of paying a commit and an fsync of its own.
LAZY_S = 0.02
#: Seconds the loop waits at most, after handing a COMMIT over, for the committer thread to take it.
HAND_OVER_S = 0.001


class Deferred(Protocol):
    """What the jobs of a batch hold back, to be written in bulk (`StoreCache` is one).

    `careful` False: the jobs may guess that a unique constraint holds rather than check it first
    (a send's key is rarely a resend's, and the lookup was a tenth of a message's cost); a batch
    that breaks one is rolled back and run again with `careful` True, when the jobs check."""

    careful: bool

    def has_writes(self) -> bool: ...

    def write(self, conn: sqlite3.Connection) -> None:
        """Write what is held back, now, in the open transaction."""

    def rolled_back(self, conn: sqlite3.Connection) -> None:
        """The batch was rolled back: forget what it held back and what it cached."""


class GroupCommit:
    """Runs jobs on `conn` in batches, one commit each. Owns the connection and the committer thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        sync: SyncMode,
        deferred: Deferred,
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._max_batch = max_batch
        self._deferred = deferred
        self._jobs: deque[_Job] = deque()
        self._busy = False  # a batch is being run or committed
        self._lazy: list[_Job] = []
        self._lazy_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._idle: asyncio.Future[None] | None = None
        # Waiting for the connection between two batches (`turn`): backups take turns.
        self._turns: deque[asyncio.Future[None]] = deque()
        # A plain thread and queue rather than an executor: one hand-over each way per batch, and
        # no concurrent.futures wrapping on the hot path.
        self._commits: queue.SimpleQueue[tuple[str, list[_Result]] | None] = queue.SimpleQueue()
        # Held but for the moment between the committer thread taking a COMMIT and starting it.
        self._taken = threading.Lock()
        self._taken.acquire()
        self._commits_since_checkpoint = 0
        #: the committed batch whose WAL frames are being synced: its results, and when its COMMIT
        #: began (the connection stays busy until then)
        self._syncing: tuple[list[_Result], float] | None = None
        self._failed: StoreError | None = None  # a sync failed: nothing more is accepted
        self._walsync: WalSync | None = None
        if sync is SyncMode.FULL:
            # The COMMIT appends to the WAL and WalSync syncs it before anything is answered: what
            # synchronous=FULL did, without a thread waiting for the disk and then for the GIL.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            main = conn.execute("PRAGMA database_list").fetchone()[2]
            self._walsync = WalSync(main + "-wal", loop, self._synced)
        #: batch sizes and commit times for the admin port (None: off)
        self.metrics: Metrics | None = None
        self._batch_started = 0.0
        self._committer = threading.Thread(target=self._commit_loop, name="dmds-sqlite-commit", daemon=True)
        self._committer.start()

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        defers: bool = False,
        lazy: bool = False,
        weight: int = 1,
        ahead: bool = False,
    ) -> asyncio.Future[T]:
        """Run `fn` in the next batch; the future resolves after its commit. `defers`: `fn` writes
        only through `Deferred`. `lazy`: housekeeping that nobody waits on and that may be reordered
        after later jobs; it rides with the next batch, or starts one after LAZY_S. `weight`: the
        operations `fn` does (a run of messages), which a batch counts against `max_batch`.
        `ahead`: a read that need not see the jobs waiting before it: it goes first in the next
        batch, so it is answered before that batch's commit."""
        fut: asyncio.Future[T] = self._loop.create_future()
        if self.closed:
            fut.set_exception(StoreError("store is closed"))
            return fut
        if lazy:
            self._lazy.append((fn, fut, defers, weight))
            if not self._busy and self._lazy_timer is None:
                self._lazy_timer = self._loop.call_later(LAZY_S, self._lazy_due)
            return fut
        if ahead:
            self._jobs.appendleft((fn, fut, defers, weight))
        else:
            self._jobs.append((fn, fut, defers, weight))
        if not self._busy:
            self._busy = True
            # call_soon, not now: jobs submitted in the same loop pass join this batch.
            self._loop.call_soon(self._run_batch)
        return fut

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[sqlite3.Connection]:
        """The connection, between two batches: no transaction is open, no commit is in flight, and
        no batch starts until the block ends (requests wait meanwhile: keep it short). What the
        block commits, if anything, it commits itself."""
        if not self._busy:
            self._busy = True
        else:
            turn: asyncio.Future[None] = self._loop.create_future()
            self._turns.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._next()  # given, but its waiter was cancelled before it ran
                raise
        try:
            yield self._conn
        finally:
            self._next()

    async def close(self) -> None:
        """Run what is queued (lazy jobs too), then stop the thread and close the connection."""
        self.closed = True
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self._lazy and not self._busy:
            self._busy = True
            self._run_batch()
        if self._busy:
            self._idle = self._loop.create_future()
            await self._idle
        self._commits.put(None)
        await asyncio.to_thread(self._committer.join)
        if self._walsync is not None:
            await self._walsync.close()
        self._conn.close()

    # -- the batches -----------------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        while (work := self._commits.get()) is not None:
            # Only this thread releases, so a lock seen locked stays so until here; it is not only if
            # the loop has not taken back an earlier release (a hand-over it stopped waiting for).
            if self._taken.locked():
                self._taken.release()
            sql, results = work
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                self._conn.execute(sql)
            except sqlite3.Error as exc:
                error = exc
            # This thread is the only writer of commit_seconds while its commit is in flight.
            if results and self.metrics is not None:
                self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self._loop.call_soon_threadsafe(self._batch_done, results, error, True)

    def _hand_over(self, sql: str, results: list[_Result]) -> None:
        """Give `sql` to the committer thread and wait, the GIL released, until it has started it.

        Only checkpoints go this way now (every CHECKPOINT_EVERY commits). Woken, the thread needs
        the GIL to get from the queue into sqlite, and the loop, going on with the next requests,
        held it for 0.6 ms (median) before the thread got it. Waiting here costs the thread's
        wake-up instead (0.03 ms); after HAND_OVER_S the loop goes on regardless."""
        self._taken.acquire(blocking=False)  # a hand-over that timed out was taken since
        self._commits.put((sql, results))
        self._taken.acquire(timeout=HAND_OVER_S)

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        if self._lazy and not self._busy:
            self._busy = True
            self._run_batch()

    def _run_batch(self) -> None:
        conn = self._conn
        deferred = self._deferred
        if self._lazy:
            self._jobs.extend(self._lazy)
            self._lazy.clear()
        batch = self._take()
        if self._failed is not None:
            for _, fut, _, _ in batch:
                _resolve((fut, None, self._failed))
            self._next()
            return
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            self._batch_started = time.perf_counter()
        before = conn.total_changes
        try:
            try:
                results = self._run_jobs(batch)
            except sqlite3.IntegrityError:
                if deferred.careful:
                    raise
                # A guess was wrong (a resend's key): again, checking. Reads answered at once
                # wrote nothing and are not run again.
                conn.execute("ROLLBACK")
                deferred.rolled_back(conn)
                deferred.careful = True
                try:
                    results = self._run_jobs([job for job in batch if not job[1].done()])
                finally:
                    deferred.careful = False
            # The COMMIT only appends to the WAL in the OS page cache (synchronous=NORMAL): with no
            # fsync in it, a hand-over to a thread would cost more than it does.
            committing = time.perf_counter()
            conn.execute("COMMIT")
        except Exception as exc:
            # An I/O error, or a bug in a job: what the batch wrote cannot be trusted, so none of
            # it is kept and every request of the batch fails (nothing is acknowledged).
            if not isinstance(exc, sqlite3.Error):
                log.exception("store job failed")
            self._batch_done([(fut, None, None) for _, fut, _, _ in batch], exc)
            return
        if conn.total_changes != before:
            self._commits_since_checkpoint += 1
            if self._walsync is None:
                if self.metrics is not None:
                    self.metrics.commit_seconds.observe(time.perf_counter() - committing)
            elif (synced := self._walsync.request()) is None:
                # Busy until the helper answers: the next batch's reads see only durable rows.
                self._syncing = (results, committing)
                return
            else:
                self._settle(results, committing, synced)
                results = []
        self._batch_done(results, None)

    def _run_jobs(self, batch: list[_Job]) -> list[_Result]:
        """Run `batch` in a new transaction, left open; the results still to be answered."""
        conn, deferred = self._conn, self._deferred
        results: list[_Result] = []
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        clean = True  # nothing written in this batch yet
        for fn, fut, defers, _ in batch:
            if not defers and deferred.has_writes():
                deferred.write(conn)
            try:
                value = fn(conn)
            except DmdsError as exc:
                result: _Result = (fut, None, exc)  # raised before the job wrote anything
            else:
                result = (fut, value, None)
            if clean and conn.total_changes == before and not deferred.has_writes():
                # A read before the batch's first write saw only committed rows: answered now,
                # not after this batch's fsync (a courier's next page must not wait for acks).
                _resolve(result)
            else:
                clean = False
                results.append(result)
        if deferred.has_writes():
            deferred.write(conn)
        return results

    def _synced(self, count: int, ok: bool) -> None:
        """WalSync's answer for the batch being synced (one at a time: `count` is 1)."""
        assert count == 1, count
        assert self._syncing is not None
        results, committing = self._syncing
        self._syncing = None
        self._settle(results, committing, ok)
        self._batch_done([], None, committed=True)

    def _settle(self, results: list[_Result], committing: float, synced: bool) -> None:
        if self.metrics is not None:
            self.metrics.commit_seconds.observe(time.perf_counter() - committing)
        if synced:
            for result in results:
                _resolve(result)
            return
        if self._failed is None:
            log.error("the store's fsync failed: it accepts nothing more until the server restarts")
            self._failed = StoreError("store failure: fsync failed (see the server's log)")
        for fut, _, _ in results:
            _resolve((fut, None, self._failed))

    def _take(self) -> list[_Job]:
        """The next batch's jobs: at most `max_batch` operations (or one job alone, whatever its
        weight), so that a transaction stays short however many runs of messages wait."""
        jobs, room = self._jobs, self._max_batch
        if not jobs:
            return []
        batch = [jobs.popleft()]
        room -= batch[0][3]
        while jobs and jobs[0][3] <= room:
            room -= jobs[0][3]
            batch.append(jobs.popleft())
        return batch

    def _batch_done(
        self, results: list[_Result], error: BaseException | None, committed: bool = False
    ) -> None:
        """Settle a batch and start the next. `committed`: called back once a commit is durable (the
        committer thread's checkpoint, the fsync helper's answer), so the next batch can start at
        once (from the loop's own batches that would recurse)."""
        if self._batch_started and (metrics := self.metrics) is not None:
            metrics.batch_seconds.observe(time.perf_counter() - self._batch_started)
            self._batch_started = 0.0
            metrics.batches_failed += error is not None
        if error is not None and not results:
            log.warning("WAL checkpoint failed (%s); the next one retries", error)
        elif error is not None:
            log.error("store commit failed (%s); failing %d request(s)", error, len(results))
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            self._deferred.rolled_back(self._conn)
            failure = StoreError(f"store failure: {error}")
            results = [(fut, None, failure) for fut, _, _ in results]
        for result in results:
            _resolve(result)
        if self._commits_since_checkpoint >= CHECKPOINT_EVERY:
            # A checkpoint copies the WAL back into the database and fsyncs: off the loop, while
            # the connection is left alone (self._busy stays True until it is done).
            self._commits_since_checkpoint = 0
            self._hand_over("PRAGMA wal_checkpoint(PASSIVE)", [])
        else:
            self._next(committed)

    def _next(self, committed: bool = False) -> None:
        """The connection is free: to a waiting turn first (so that turns and batches alternate and
        neither starves), else to the next batch, else idle."""
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():  # else its waiter was cancelled
                turn.set_result(None)
                return
        if self._jobs:
            if committed:
                self._run_batch()  # one loop pass sooner: the disk is idle until then
            else:
                self._loop.call_soon(self._run_batch)
        else:
            self._busy = False
            if self._lazy and self._lazy_timer is None:
                self._lazy_timer = self._loop.call_later(LAZY_S, self._lazy_due)
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)


def _resolve(result: _Result) -> None:
    fut, value, exc = result
    if fut.done():
        return  # cancelled, or a read answered before its batch failed
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
