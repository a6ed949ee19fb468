"""SQLite store: statements on the event loop, group commits on a committer thread.

Theory of operation
-------------------
Every call becomes a job (a function of the connection) on one ordered queue. When the connection
is free, the loop thread runs all the waiting jobs (up to `max_batch`) inside one transaction, then
hands the COMMIT, with its fsync, to a single committer thread and goes
back to serving the network. Only when the commit has returned are the jobs' futures resolved: a
caller that gets a result knows its change is durable. Jobs that arrive meanwhile wait for the next
batch, so requests that arrive together share one commit and one fsync (group commit). With
`--sync normal` there is no fsync to wait for: the COMMIT runs on the loop too, and only the WAL
checkpoints, which do sync, go to the thread.

Why statements on the loop and only the commit on a thread: a statement on a warm page cache takes
microseconds, while each hand-over between threads costs a wake-up and a fight for the GIL (a
writer thread that ran the statements measured 4 to 6 times slower per batch under load). The
commit is the part that blocks, on the disk, and sqlite releases the GIL for all of it.

The rule every job keeps: it raises a domain error (AliasTaken, UnknownUser, LimitExceeded...)
before its first write, so a refused request leaves nothing behind and the others in its batch are
unharmed, with no savepoint per job (a savepoint is two more statements per request, and statements
are the store's main cost). Any other failure, in a job or in the commit, rolls the whole batch back
and fails every request in it with StoreError: nothing is acknowledged that is not committed. A batch
that changed nothing (reads only) is committed on the loop at once: there is nothing to sync.

Reads go through the same queue, which keeps one order for everything: a read sees every change
submitted before it. The couriers' reloads rely on that.

Durability: WAL journal. `sync=full` (synchronous=FULL) fsyncs the WAL at every commit: survives
power loss. `sync=normal` does not fsync per commit: survives a crash of the process only.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from dmds.core.model import ItemKind, OutboxItem, User
from dmds.errors import AliasTaken, DmdsError, LimitExceeded, StoreError, UnknownUser
from dmds.settings import StoreSettings, SyncMode

log = logging.getLogger(__name__)

T = TypeVar("T")
_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
DB_NAME = "dmds.sqlite3"
#: With --sync normal, commits between two checkpoints (run on the committer thread). With --sync full
#: SQLite's own automatic checkpoint runs in the COMMIT, which is already on that thread.
CHECKPOINT_EVERY = 500


def _connect(path: Path, sync: SyncMode) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: the committer thread runs COMMIT; the loop never touches the
    # connection while it does.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # One server process owns the store: exclusive locking spares the file-lock system calls of
    # every transaction (and keeps the WAL index in memory). A second server on the same data dir
    # fails at start instead of corrupting anything.
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync is SyncMode.FULL else 'NORMAL'}")
    if sync is SyncMode.NORMAL:
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the store checkpoints off the loop itself
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    schema = resources.files("dmds.stores.sqlite").joinpath("schema.sql").read_text(encoding="utf-8")
    conn.executescript(schema)
    return conn


class SqliteStore:
    """`dmds.core.ports.Store` on SQLite. Create with `await SqliteStore.open(data_dir, settings)`."""

    def __init__(
        self, conn: sqlite3.Connection, settings: StoreSettings, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._loop = loop
        self._jobs: deque[_Job] = deque()
        self._busy = False  # a batch is being run or committed
        self._closed = False
        self._idle: asyncio.Future[None] | None = None
        # A plain thread and queue rather than an executor: one hand-over each way per batch, and
        # no concurrent.futures wrapping on the hot path.
        self._commits: queue.SimpleQueue[tuple[str, list[_Result]] | None] = queue.SimpleQueue()
        self._inline_commit = settings.sync is SyncMode.NORMAL
        self._commits_since_checkpoint = 0
        self._committer = threading.Thread(target=self._commit_loop, name="dmds-sqlite-commit", daemon=True)
        self._committer.start()

    def _commit_loop(self) -> None:
        while (work := self._commits.get()) is not None:
            sql, results = work
            error: BaseException | None = None
            try:
                self._conn.execute(sql)
            except sqlite3.Error as exc:
                error = exc
            self._loop.call_soon_threadsafe(self._batch_done, results, error, True)

    @classmethod
    async def open(cls, data_dir: Path, settings: StoreSettings) -> SqliteStore:
        path = data_dir / DB_NAME
        try:
            conn = await asyncio.to_thread(_connect, path, settings.sync)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        return cls(conn, settings, asyncio.get_running_loop())

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.append((fn, fut))
        if not self._busy:
            self._busy = True
            # call_soon, not now: jobs submitted in the same loop pass join this batch.
            self._loop.call_soon(self._run_batch)
        return await fut

    def _run_batch(self) -> None:
        conn = self._conn
        batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self._settings.max_batch))]
        results: list[_Result] = []
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                try:
                    value = fn(conn)
                except DmdsError as exc:
                    results.append((fut, None, exc))  # raised before the job wrote anything
                else:
                    results.append((fut, value, None))
            if conn.total_changes == before or self._inline_commit:
                # Nothing written, or --sync normal: COMMIT only appends to the WAL in the OS page
                # cache, with no fsync to wait for, so a hand-over to the thread would cost more.
                conn.execute("COMMIT")
                self._commits_since_checkpoint += conn.total_changes != before
                self._batch_done(results, None)
                return
        except Exception as exc:
            # An I/O error, or a bug in a job: what the batch wrote cannot be trusted, so none of
            # it is kept and every request of the batch fails (nothing is acknowledged).
            if not isinstance(exc, sqlite3.Error):
                log.exception("store job failed")
            self._batch_done([(fut, None, None) for _, fut in batch], exc)
            return
        self._commits.put(("COMMIT", results))

    def _batch_done(
        self, results: list[_Result], error: BaseException | None, committed: bool = False
    ) -> None:
        """Settle a batch and start the next. `committed`: called back from the committer thread,
        so the next batch can start at once (from the loop's own batches that would recurse)."""
        if error is not None and not results:
            log.warning("WAL checkpoint failed (%s); the next one retries", error)
        elif error is not None:
            log.error("store commit failed (%s); failing %d request(s)", error, len(results))
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            failure = StoreError(f"store failure: {error}")
            results = [(fut, None, failure) for fut, _, _ in results]
        for fut, value, exc in results:
            if fut.cancelled():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)
        if self._inline_commit and self._commits_since_checkpoint >= CHECKPOINT_EVERY:
            # A checkpoint copies the WAL back into the database and fsyncs: off the loop, while
            # the connection is left alone (self._busy stays True until it is done).
            self._commits_since_checkpoint = 0
            self._commits.put(("PRAGMA wal_checkpoint(PASSIVE)", []))
        elif self._jobs:
            if committed:
                self._run_batch()  # one loop pass sooner: the disk is idle until then
            else:
                self._loop.call_soon(self._run_batch)
        else:
            self._busy = False
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._busy:
            self._idle = self._loop.create_future()
            await self._idle
        self._commits.put(None)
        await asyncio.to_thread(self._committer.join)
        self._conn.close()

    # -- the Store port ---------------------------------------------------------------------------------

    async def register(self, user: User) -> None:
        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users (alias, full_name, birth_date) VALUES (?, ?, ?)",
                    (user.alias, user.full_name, user.birth_date),
                )
            except sqlite3.IntegrityError:
                raise AliasTaken(user.alias) from None

        await self._call(job)

    async def unregister(self, alias: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM users WHERE alias = ?", (alias,)).rowcount == 0:
                raise UnknownUser(alias)

        await self._call(job)

    async def user_exists(self, alias: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM users WHERE alias = ?", (alias,)).fetchone() is not None

        return await self._call(job)

    async def add_message(self, sender: str, recipient: str, text: str, max_stored: int) -> OutboxItem:
        def job(conn: sqlite3.Connection) -> OutboxItem:
            row = conn.execute("SELECT id FROM users WHERE alias = ?", (sender,)).fetchone()
            if row is None:
                raise UnknownUser(sender)
            sender_id = row[0]
            # The limit is part of the UPDATE so that a refused message writes nothing.
            row = conn.execute(
                "UPDATE users SET last_message_id = last_message_id + 1,"
                " stored_messages = stored_messages + 1"
                " WHERE alias = ? AND stored_messages < ? RETURNING id, last_message_id",
                (recipient, max_stored),
            ).fetchone()
            if row is None:
                if conn.execute("SELECT 1 FROM users WHERE alias = ?", (recipient,)).fetchone():
                    raise LimitExceeded(f"{recipient} has {max_stored} undelivered messages")
                raise UnknownUser(recipient)
            owner_id, message_id = row
            cur = conn.execute(
                "INSERT INTO outbox (owner_id, kind, message_id, sender_alias, sender_id, text)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (owner_id, ItemKind.MESSAGE, message_id, sender, sender_id, text),
            )
            assert cur.lastrowid is not None
            return OutboxItem(cur.lastrowid, recipient, ItemKind.MESSAGE, message_id, sender, text)

        return await self._call(job)

    async def pending(self, owner: str, after_seq: int, limit: int) -> list[OutboxItem]:
        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT o.seq, o.kind, o.message_id, o.sender_alias, o.text FROM outbox o"
                " JOIN users u ON u.id = o.owner_id WHERE u.alias = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
                (owner, after_seq, limit),
            ).fetchall()
            return [
                OutboxItem(seq, owner, ItemKind(kind), mid, sender, text)
                for seq, kind, mid, sender, text in rows
            ]

        return await self._call(job)

    async def delivered(self, item: OutboxItem) -> OutboxItem | None:
        def job(conn: sqlite3.Connection) -> OutboxItem | None:
            row = conn.execute(
                "DELETE FROM outbox WHERE seq = ? RETURNING owner_id, kind, sender_id", (item.seq,)
            ).fetchone()
            if row is None:
                return None  # already removed: the user was unregistered meanwhile
            owner_id, kind, sender_id = row
            if kind != ItemKind.MESSAGE:
                return None
            conn.execute("UPDATE users SET stored_messages = stored_messages - 1 WHERE id = ?", (owner_id,))
            if sender_id is None:
                return None  # the sender unregistered: nobody to tell
            sender_row = conn.execute("SELECT alias FROM users WHERE id = ?", (sender_id,)).fetchone()
            cur = conn.execute(
                "INSERT INTO outbox (owner_id, kind, message_id) VALUES (?, ?, ?)",
                (sender_id, ItemKind.RECEIPT, item.message_id),
            )
            assert cur.lastrowid is not None
            return OutboxItem(cur.lastrowid, sender_row[0], ItemKind.RECEIPT, item.message_id)

        return await self._call(job)
