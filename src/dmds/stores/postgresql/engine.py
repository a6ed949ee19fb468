"""Group commit on PostgreSQL: the jobs that arrive together share one transaction and one WAL flush.

Theory of operation
-------------------
Every store call becomes a job (a coroutine function of the connection and the batch) on one ordered
queue, as on SQLite. One batch at a time runs on the node's one writing connection: all the waiting
jobs (up to `max_batch`) inside one transaction, then COMMIT, and only then are their futures
resolved, so a caller that gets a result knows its change is durable (synchronous_commit=on: the
commit record is flushed before COMMIT returns). One batch in flight per node keeps the rule the
couriers rely on: a read sees every change submitted before it. Several nodes give several batches in
flight, on one database.

Consecutive jobs of the same *bulk* kind (the message path's `add_message`) run as one statement with
arrays: a batch of 256 messages costs one round trip, not 256.

Every job keeps the SQLite store's rule: it raises a domain error before its first write, so a refused
request leaves nothing behind, with no savepoint per job. Statements that could fail on a constraint
are written not to (`ON CONFLICT DO NOTHING`, a check first): a failed statement would abort the whole
transaction. Any other failure rolls the batch back and fails every request in it with StoreError;
nothing is acknowledged that is not committed. A deadlock or a serialization failure between nodes'
batches (two batches locking the same users rows in opposite orders) retries the whole batch.

Wake-ups for the other nodes: the jobs of a batch note which owners got new outbox items and which
presence changes they made; the batch sends them in one NOTIFY, inside its transaction, so that it is
delivered only if the batch commits, and at most one per batch (NOTIFY takes a database-wide lock at
commit, src/backend/commands/async.c).

When the connection is lost (PostgreSQL restarting, the network), the batch fails with StoreError and
the next one connects again; until the database is back every request gets the store-failure error.
A connection lost *during COMMIT* leaves the outcome unknown: the commit record may be on disk. To
answer "failed" then would have a classic client (which has no key to make a resend safe) send the
message again and store it twice. So the batch's last statement asks for its transaction id and
inserts its *mark* (a row of `commit_marks`, under a token of this process), and a batch whose COMMIT
broke waits (off the queue: later batches go on) until a new connection can tell whether it
committed; then its requests get their results or the failure. `pg_xact_status` says when the
transaction is over, the mark whether it committed: after a crash the id alone proves nothing, since
an id whose WAL never reached disk is handed out again by the restarted database, to a transaction
that may well commit. Each batch deletes its node's older marks, but those of batches still in
doubt. Only if the database cannot say within `store_outcome_timeout_s` do they fail as in doubt.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from dmds.errors import DmdsError, StoreError

if TYPE_CHECKING:
    from dmds.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
#: The channel every node LISTENs on.
CHANNEL = "dmds"
#: NOTIFY payloads must stay under 8000 bytes; past this the batch says "look at everything".
MAX_PAYLOAD = 7000
#: Times a batch is retried after a deadlock or serialization failure with another node's batch.
RETRIES = 5
#: An advisory lock key for migrations: nodes starting together apply them once.
MIGRATION_LOCK = 0x646D6473

# A batch's last statement: its transaction id, and if it has one (it wrote), its mark in, its
# node's older marks out but those in doubt ($3). `wrote` is read before the INSERT: the mark alone
# must not give a batch that wrote nothing an id. The DELETE does not see the new mark (one snapshot).
_MARKED = (
    "WITH wrote AS (SELECT pg_current_xact_id_if_assigned() AS xid),"
    " mark AS (INSERT INTO commit_marks (node_id, token) SELECT $1, $2 FROM wrote WHERE xid IS NOT NULL),"
    " tidy AS (DELETE FROM commit_marks WHERE node_id = $1 AND token <> ALL($3::bigint[])"
    " AND (SELECT xid FROM wrote) IS NOT NULL)"
)
_LAST = _MARKED + " SELECT NULL, xid::text FROM wrote"
_LAST_NOTIFYING = _MARKED + " SELECT pg_notify($4, $5), xid::text FROM wrote"


@dataclass(slots=True)
class Batch:
    """What the jobs of one batch tell the other nodes: new items per owner, presence changes.
    Made anew for each attempt, so a retried batch notifies once."""

    woken: set[str] = field(default_factory=set)
    presence: list[str] = field(default_factory=list)

    def wake(self, owner: str) -> None:
        self.woken.add(owner)

    def payload(self, node_id: str) -> str | None:
        if not self.woken and not self.presence:
            return None
        lines = [node_id, *self.presence, *(f"w {owner}" for owner in sorted(self.woken))]
        text = "\n".join(lines)
        if len(text.encode()) > MAX_PAYLOAD:
            # Too much to list: every node re-reads presence and pokes every courier.
            return f"{node_id}\n!"
        return text


Job = Callable[[asyncpg.Connection, Batch], Awaitable[Any]]
#: A bulk job runs many calls' arguments at once and returns one result (or DmdsError) per call.
Bulk = Callable[[asyncpg.Connection, Batch, list[Any]], Awaitable[list[Any]]]


class _CommitInDoubt(Exception):
    """The connection broke during COMMIT: the batch (transaction `xid`, mark `token`) may have
    committed."""

    def __init__(self, xid: str, token: int, results: list[tuple[Any, BaseException | None]]) -> None:
        super().__init__(xid)
        self.xid = xid
        self.token = token
        self.results = results


@dataclass(slots=True)
class _Pending:
    fn: Job | None
    future: asyncio.Future[Any]
    bulk: Bulk | None = None
    args: Any = None
    #: users rows (by alias) the job locks, and acks (owner, message ids) whose senders it locks
    locks: tuple[str, ...] = ()
    acks: tuple[str, list[int]] | None = None


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration of this engine, in order."""
    folder = resources.files("dmds.stores.postgresql").joinpath("migrations")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text(encoding="utf-8")))
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations above the database's version, each in its own transaction; returns the
    names applied. Safe with several nodes starting at once (an advisory lock)."""
    applied = []
    known = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dmds_schema (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        newest = await conn.fetchval("SELECT max(version) FROM dmds_schema")
    if newest is not None and newest > known[-1][0]:
        # A later release migrated the database: this code would read and write it by rules it no
        # longer keeps (schema 5 moved every waiting message out of the outbox). Refuse to start.
        raise StoreError(
            f"the database is at schema {newest}, newer than this release knows ({known[-1][0]}):"
            " run the release that migrated it"
        )
    for number, name, sql in known:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            done = await conn.fetchval("SELECT 1 FROM dmds_schema WHERE version = $1", number)
            if done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO dmds_schema (version, name) VALUES ($1, $2)", number, name)
            applied.append(name)
            log.info("store schema migrated to version %d (%s)", number, name)
    return applied


async def connect(url: str, timeout_s: float) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"cannot connect to {redact(url)}: {exc or 'timeout'}") from None
    return conn


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


class Engine:
    """One node's writing connection and its queue of jobs."""

    def __init__(
        self, url: str, node_id: str, max_batch: int, connect_timeout_s: float, outcome_timeout_s: float
    ) -> None:
        self.url = url
        self.node_id = node_id
        self._max_batch = max_batch
        self._connect_timeout_s = connect_timeout_s
        self._outcome_timeout_s = outcome_timeout_s
        #: batches whose COMMIT broke, waiting to learn whether it happened, by the tokens of their
        #: marks (which later batches must leave in place until they know)
        self._in_doubt: dict[int, asyncio.Task[None]] = {}
        # From a random start: a node id may be reused by the next process, and a mark left by the
        # one before must not pass for one of ours.
        self._tokens = itertools.count(secrets.randbits(62))
        self._conn: asyncpg.Connection | None = None
        self._jobs: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: called with each batch's size and seconds in the database (metrics, benchmarks)
        self.batches = 0
        #: batch sizes, commit times, reconnections for the admin port (None: off)
        self.metrics: Metrics | None = None

    @property
    def connected(self) -> bool:
        """The writing connection is open (it is opened again by the next batch after a loss)."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch."""
        return len(self._jobs)

    @property
    def in_doubt(self) -> int:
        """Batches whose COMMIT broke, waiting to learn whether it committed."""
        return len(self._in_doubt)

    async def open(self) -> None:
        self._conn = await connect(self.url, self._connect_timeout_s)

    def submit(
        self, fn: Job, locks: tuple[str, ...] = (), acks: tuple[str, list[int]] | None = None
    ) -> asyncio.Future[Any]:
        """Run `fn` in the next batch. `locks` and `acks` name the users rows it will lock (see
        `dmds_lock`): the batch takes them all first, in one order for every node."""
        future = asyncio.get_running_loop().create_future()
        return self._enqueue(_Pending(fn, future, locks=locks, acks=acks))

    def submit_bulk(self, bulk: Bulk, args: Any, locks: tuple[str, ...] = ()) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        return self._enqueue(_Pending(None, future, bulk, args, locks=locks))

    def _enqueue(self, job: _Pending) -> asyncio.Future[Any]:
        if self._closed:
            job.future.set_exception(StoreError("store is closed"))
            return job.future
        self._jobs.append(job)
        if self._task is None:
            # Started at once but runs at the next loop pass: jobs submitted in this pass join it.
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dmds-pg-batches")
        return job.future

    async def _run(self) -> None:
        try:
            while self._jobs:
                await asyncio.sleep(0)  # let the rest of this loop pass submit its jobs
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self._max_batch))]
                await self._run_batch(batch)
        finally:
            self._task = None

    async def _run_batch(self, jobs: list[_Pending]) -> None:
        if (metrics := self.metrics) is None:
            await self._run_attempts(jobs)
            return
        metrics.batch_size.observe(len(jobs))
        started = time.perf_counter()
        try:
            await self._run_attempts(jobs)
        finally:
            metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _run_attempts(self, jobs: list[_Pending]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                conn = await self._connection()
                results = await self._attempt(conn, jobs)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                if attempt == RETRIES:
                    self._fail(jobs, exc)
                    return
                log.debug("batch of %d retried after %s", len(jobs), type(exc).__name__)
                await asyncio.sleep(0.001 * (attempt + 1))
                continue
            except _CommitInDoubt as doubt:
                await self._drop_connection()
                task = asyncio.get_running_loop().create_task(self._resolve(jobs, doubt))
                self._in_doubt[doubt.token] = task
                task.add_done_callback(functools.partial(self._doubt_over, doubt.token))
                return
            except Exception as exc:
                if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | StoreError):
                    log.exception("store job failed")
                await self._drop_connection()
                self._fail(jobs, exc)
                return
            self._answer(jobs, results)
            return

    def _answer(self, jobs: list[_Pending], results: list[tuple[Any, BaseException | None]]) -> None:
        self.batches += 1
        for job, (value, error) in zip(jobs, results, strict=True):
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

    def _doubt_over(self, token: int, _task: asyncio.Task[None]) -> None:
        del self._in_doubt[token]

    async def _resolve(self, jobs: list[_Pending], doubt: _CommitInDoubt) -> None:
        """Answer a batch whose COMMIT broke once the database says whether it committed."""
        cause = doubt.__cause__ or doubt
        try:
            status = await self._outcome(doubt.xid, doubt.token)
        except asyncio.CancelledError:
            self._fail(jobs, StoreError(f"closed before the outcome of a broken commit was known ({cause})"))
            raise
        if status == "committed":
            log.warning("the COMMIT of a batch of %d broke (%s), and it had committed", len(jobs), cause)
            self._answer(jobs, doubt.results)
        elif status == "aborted":
            self._fail(jobs, cause)
        else:
            self._fail(jobs, StoreError(f"the outcome of a broken commit is unknown ({cause})"))

    async def _outcome(self, xid: str, token: int) -> str | None:
        """'committed' or 'aborted' (a crash aborts what was in progress), or None: the database
        could not be asked in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._outcome_timeout_s
        warned = False
        while loop.time() < deadline:
            try:
                conn = await connect(self.url, self._connect_timeout_s)
                try:
                    status = await self._status(conn, xid, token)
                finally:
                    conn.terminate()
                if status is not None:
                    return status
            except (StoreError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if not warned:
                    log.warning("cannot ask yet whether transaction %s committed: %s", xid, exc)
                    warned = True
            await asyncio.sleep(0.1)
        return None

    async def _status(self, conn: asyncpg.Connection, xid: str, token: int) -> str | None:
        """The outcome, or None while transaction `xid` may still be running."""
        try:
            status: str | None = await conn.fetchval("SELECT pg_xact_status($1::text::xid8)", xid)
        except asyncpg.InvalidParameterValueError:
            # "In the future": the restarted database never saw the id (its WAL was lost in the
            # crash), so the transaction is gone, uncommitted, and no one has the id yet.
            return "aborted"
        if status == "in progress":
            return None
        # Over, though perhaps it is another transaction that had the id: the mark, read in a
        # snapshot taken after it ended, says whether ours committed.
        marked = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM commit_marks WHERE node_id = $1 AND token = $2)",
            self.node_id,
            token,
        )
        return "committed" if marked else "aborted"

    async def _attempt(
        self, conn: asyncpg.Connection, jobs: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        batch = Batch()
        xid: str | None = None
        token = next(self._tokens)
        try:
            async with conn.transaction():
                await self._jobs_of(conn, jobs, batch, results)
                # The last statement before COMMIT, so that an exception with `xid` set is COMMIT's.
                # A batch that wrote nothing has no id, and needs none.
                marks = (self.node_id, token, list(self._in_doubt))
                payload = batch.payload(self.node_id)
                if payload is not None:
                    row = await conn.fetchrow(_LAST_NOTIFYING, *marks, CHANNEL, payload)
                else:
                    row = await conn.fetchrow(_LAST, *marks)
                assert row is not None
                xid = row[1]
                committing = time.perf_counter()
            if self.metrics is not None and xid is not None:  # a batch that wrote (as on SQLite)
                self.metrics.commit_seconds.observe(time.perf_counter() - committing)
        except Exception as exc:
            if xid is not None:
                raise _CommitInDoubt(xid, token, results) from exc
            raise
        return results

    async def _jobs_of(
        self,
        conn: asyncpg.Connection,
        jobs: list[_Pending],
        batch: Batch,
        results: list[tuple[Any, BaseException | None]],
    ) -> None:
        await self._lock(conn, jobs)
        i = 0
        while i < len(jobs):
            job = jobs[i]
            if job.bulk is not None:
                j = i
                while j < len(jobs) and jobs[j].bulk is job.bulk:
                    j += 1
                out = await job.bulk(conn, batch, [p.args for p in jobs[i:j]])
                results.extend((None, o) if isinstance(o, DmdsError) else (o, None) for o in out)
                i = j
                continue
            assert job.fn is not None
            try:
                results.append((await job.fn(conn, batch), None))
            except DmdsError as exc:
                results.append((None, exc))  # raised before the job wrote anything
            i += 1

    async def _lock(self, conn: asyncpg.Connection, jobs: list[_Pending]) -> None:
        aliases = sorted({alias for job in jobs for alias in job.locks})
        owners: list[str] = []
        ids: list[int] = []
        for job in jobs:
            if job.acks is not None:
                owners += [job.acks[0]] * len(job.acks[1])
                ids += job.acks[1]
        if aliases or ids:
            await conn.fetchval("SELECT dmds_lock($1, $2, $3)", aliases, owners, ids)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await connect(self.url, self._connect_timeout_s)
            log.info("store connection to %s open again", redact(self.url))
            if self.metrics is not None:
                self.metrics.store_reconnects += 1
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            # A connection in an unknown state (a failed COMMIT, a broken socket) is not reused.
            conn.terminate()

    def _fail(self, jobs: list[_Pending], exc: BaseException) -> None:
        log.error("store batch failed (%s); failing %d request(s)", exc, len(jobs))
        if self.metrics is not None:
            self.metrics.batches_failed += 1
        failure = exc if isinstance(exc, StoreError) else StoreError(f"store failure: {exc}")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(failure)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        doubtful = list(self._in_doubt.values())
        for task in doubtful:
            task.cancel()
        await asyncio.gather(*doubtful, return_exceptions=True)
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
