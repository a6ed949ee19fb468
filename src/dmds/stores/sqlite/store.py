"""SQLite store: one connection on one writer thread, with group commit.

Theory of operation
-------------------
sqlite3 blocks, and an fsync can take milliseconds, so no SQL runs on the event loop. Every call
becomes a job on a queue; the writer thread takes all the jobs waiting (up to `max_batch`), runs each
inside its own savepoint of one transaction, commits once, and only then resolves the jobs' futures
on the loop, in one callback per batch. Requests that arrive together thus share one commit and one
fsync (group commit), and nothing is acknowledged before it is durable: a caller that gets a result
knows its change is committed. A job that raises a domain error is rolled back to its savepoint
without harming the others in its batch; if the commit itself fails, every job of the batch fails
with StoreError.

Reads go through the same queue. That keeps one order for everything (a read sees every change
submitted before it), which the couriers' reloads rely on.

Durability: WAL journal. `sync=full` (synchronous=FULL) fsyncs the WAL at every commit: survives
power loss. `sync=normal` does not fsync per commit: survives a crash of the process only.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
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
_STOP: Any = object()
DB_NAME = "dmds.sqlite3"


class SqliteStore:
    """`dmds.core.ports.Store` on SQLite. Create with `await SqliteStore.open(data_dir, settings)`."""

    def __init__(self, path: Path, settings: StoreSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._settings = settings
        self._loop = loop
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        self._ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._writer, name="dmds-sqlite-writer", daemon=True)

    @classmethod
    async def open(cls, data_dir: Path, settings: StoreSettings) -> SqliteStore:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data dir {data_dir}: {exc}") from exc
        store = cls(data_dir / DB_NAME, settings, asyncio.get_running_loop())
        store._thread.start()
        await store._ready
        return store

    # -- the writer thread ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._settings.sync is SyncMode.FULL else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        schema = resources.files("dmds.stores.sqlite").joinpath("schema.sql").read_text(encoding="utf-8")
        conn.executescript(schema)
        return conn

    def _writer(self) -> None:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            err = StoreError(f"cannot open {self._path}: {exc}")
            self._loop.call_soon_threadsafe(_settle, [(self._ready, None, err)])
            return
        self._loop.call_soon_threadsafe(_settle, [(self._ready, None, None)])
        try:
            while True:
                first = self._jobs.get()
                if first is _STOP:
                    break
                batch = [first]
                stop = False
                while len(batch) < self._settings.max_batch:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
                if stop:
                    break
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn)
                except DmdsError as exc:
                    conn.execute("ROLLBACK TO job")
                    results.append((fut, None, exc))
                except Exception as exc:
                    # One job's failure (a bug, a bad row) must not take the writer thread down.
                    log.exception("store job failed")
                    conn.execute("ROLLBACK TO job")
                    results.append((fut, None, StoreError(f"store failure: {exc}")))
                else:
                    results.append((fut, value, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.exception("store commit failed; failing %d request(s)", len(batch))
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            err = StoreError(f"store failure: {exc}")
            results = [(fut, None, err) for _, fut in batch]
        self._loop.call_soon_threadsafe(_settle, results)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, fut))
        return await fut

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)

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
            row = conn.execute(
                "UPDATE users SET last_message_id = last_message_id + 1, stored_messages = stored_messages + 1"
                " WHERE alias = ? RETURNING id, last_message_id, stored_messages",
                (recipient,),
            ).fetchone()
            if row is None:
                raise UnknownUser(recipient)
            owner_id, message_id, stored = row
            if stored > max_stored:
                raise LimitExceeded(f"{recipient} has {max_stored} undelivered messages")
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
            return [OutboxItem(seq, owner, ItemKind(kind), mid, sender, text) for seq, kind, mid, sender, text in rows]

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


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
