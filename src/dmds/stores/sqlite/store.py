"""SQLite store: `dmds.core.ports.Store` on one embedded database file.

The pieces: `connection.py` opens the file (pragmas, migrations); `batches.py` is the engine, which
runs every call as a job in group-committed batches (its theory of operation is there); `cache.py`
holds the counters and the rows the message path defers; `messages.py` is the message path's SQL.
This module is the store's face: accounts, sessions, blocking, attachments, backups, and the
message path's entry points.

Durability: WAL journal. `sync=full` (synchronous=FULL) fsyncs the WAL at every commit: survives
power loss. `sync=normal` does not fsync per commit: survives a crash of the process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dmds.core.model import (
    AttachmentInfo,
    OutboxItem,
    SendCall,
    StoredMessage,
    StoreSummary,
    User,
    UserInfo,
    UserRecord,
)
from dmds.core.validation import check_chunk
from dmds.errors import AliasTaken, Blocked, DmdsError, StoreError, UnknownAttachment, UnknownUser
from dmds.settings import StoreSettings
from dmds.stores.sqlite import admin, messages
from dmds.stores.sqlite import summary as operator
from dmds.stores.sqlite.backup import BackupReport, OnlineBackup
from dmds.stores.sqlite.batches import GroupCommit
from dmds.stores.sqlite.cache import StoreCache
from dmds.stores.sqlite.connection import DB_NAME, connect

log = logging.getLogger(__name__)

__all__ = ["DB_NAME", "SqliteStore"]


class SqliteStore:
    """`dmds.core.ports.Store` on SQLite. Create with `await SqliteStore.open(data_dir, settings)`."""

    def __init__(
        self, conn: sqlite3.Connection, settings: StoreSettings, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._cache = StoreCache(conn)
        #: the engine; its `metrics` (batch sizes, commit times) are set for the admin port
        self.engine = GroupCommit(
            conn, loop, max_batch=settings.max_batch, sync=settings.sync, deferred=self._cache
        )
        self._submit = self.engine.submit
        self._backups: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, data_dir: Path, settings: StoreSettings) -> SqliteStore:
        path = data_dir / DB_NAME
        try:
            conn = await asyncio.to_thread(connect, path, settings.sync)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        return cls(conn, settings, asyncio.get_running_loop())

    def turn(self) -> contextlib.AbstractAsyncContextManager[sqlite3.Connection]:
        """The store's connection between two batches (`GroupCommit.turn`): backups step in turns."""
        return self.engine.turn()

    async def backup(
        self, dest: Path, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> BackupReport:
        """A consistent copy of the live database at `dest` (a file, or a directory to name one in),
        written atomically, refusing to overwrite unless `force`; see `dmds.stores.sqlite.backup`.
        `progress(remaining_pages, total_pages)` is called on the loop after each step."""
        if self.engine.closed:
            raise StoreError("store is closed")
        if self._backups:
            raise StoreError("a backup is already running")
        task = self._loop.create_task(
            OnlineBackup(self, dest, force, self._settings.backup_step_pages, progress).run()
        )
        self._backups.add(task)
        task.add_done_callback(self._backups.discard)
        return await task

    async def close(self) -> None:
        if self.engine.closed:
            return
        self.engine.closed = True  # no new jobs while the backups stop
        for task in list(self._backups):  # aborted: they take the turns they need to stop cleanly
            task.cancel()
        await asyncio.gather(*self._backups, return_exceptions=True)
        await self.engine.close()

    async def ping(self) -> None:
        await self._submit(operator.ping)

    async def summary(self) -> StoreSummary:
        return await self._submit(operator.summary)

    async def users(self, prefix: str, after: str, limit: int) -> list[UserInfo]:
        return await self._submit(lambda conn: admin.users(conn, prefix, after, limit))

    async def user_info(self, alias: str) -> UserInfo | None:
        return await self._submit(lambda conn: admin.user_info(conn, alias))

    async def block(self, alias: str, now: float) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            added = admin.block(conn, alias, now)
            self._cache.blocked.add(alias)  # a failed batch reads them again
            return added

        return await self._submit(job)

    async def unblock(self, alias: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            removed = admin.unblock(conn, alias)
            self._cache.blocked.discard(alias)
            return removed

        return await self._submit(job)

    async def blocked(self, prefix: str, limit: int) -> list[tuple[str, float]]:
        return await self._submit(lambda conn: admin.blocked(conn, prefix, limit))

    # -- users and accounts ------------------------------------------------------------------------------

    def register(self, user: User, password_hash: str | None = None) -> asyncio.Future[None]:
        def job(conn: sqlite3.Connection) -> None:
            if user.alias in self._cache.blocked:
                raise Blocked(f"{user.alias} is blocked")
            try:
                conn.execute(
                    "INSERT INTO users (alias, full_name, birth_date, password_hash) VALUES (?, ?, ?, ?)",
                    (user.alias, user.full_name, user.birth_date, password_hash),
                )
            except sqlite3.IntegrityError:
                raise AliasTaken(user.alias) from None

        return self._submit(job)  # a future: the classic REGISTER waits on it without a task

    async def unregister(self, alias: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM users WHERE alias = ?", (alias,)).fetchone()
            if row is None:
                raise UnknownUser(alias)
            uploads = [u for (u,) in conn.execute("SELECT id FROM attachments WHERE owner_id = ?", row)]
            conn.execute("DELETE FROM users WHERE id = ?", row)
            self._cache.accounts.pop(alias, None)
            # Their uploads go too, but for those attached to messages others keep (theirs now).
            for start in range(0, len(uploads), messages.MAX_IDS):
                chunk = uploads[start : start + messages.MAX_IDS]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM attachments WHERE id IN ({marks}) AND id NOT IN"
                    f" (SELECT attachment_id FROM messages WHERE attachment_id IN ({marks}))",
                    (*chunk, *chunk),
                )

        await self._submit(job)

    async def user(self, alias: str) -> UserRecord | None:
        def job(conn: sqlite3.Connection) -> UserRecord | None:
            row = conn.execute(
                "SELECT u.password_hash, b.alias IS NOT NULL FROM users u"
                " LEFT JOIN blocked_aliases b ON b.alias = u.alias WHERE u.alias = ?",
                (alias,),
            ).fetchone()
            return None if row is None else UserRecord(alias, row[0], bool(row[1]))

        return await self._submit(job)

    async def set_password(self, alias: str, password_hash: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE users SET password_hash = ? WHERE alias = ?", (password_hash, alias))
            if cur.rowcount == 0:
                raise UnknownUser(alias)

        await self._submit(job)

    async def create_session(self, alias: str, token_hash: bytes, now: float, expires_at: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                " SELECT ?, id, ?, ? FROM users WHERE alias = ?",
                (token_hash, now, expires_at, alias),
            )
            if cur.rowcount == 0:
                raise UnknownUser(alias)

        await self._submit(job)

    async def session_user(self, token_hash: bytes, now: float) -> tuple[str, float] | None:
        def job(conn: sqlite3.Connection) -> tuple[str, float] | None:
            row = conn.execute(
                "SELECT u.alias, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = ? AND s.expires_at > ?",
                (token_hash, now),
            ).fetchone()
            return None if row is None else (str(row[0]), float(row[1]))

        return await self._submit(job)

    async def revoke_sessions(self, alias: str, token_hash: bytes | None = None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            if token_hash is None:
                conn.execute(
                    "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE alias = ?)", (alias,)
                )
            else:
                conn.execute(
                    "DELETE FROM sessions WHERE token_hash = ?"
                    " AND user_id = (SELECT id FROM users WHERE alias = ?)",
                    (token_hash, alias),
                )

        await self._submit(job)

    # -- messages -----------------------------------------------------------------------------------------

    def add_message(
        self,
        sender: str,
        recipient: str,
        text: str,
        *,
        now: float,
        max_stored: int,
        max_stored_bytes: int,
        key: str | None = None,
        attachment: int = 0,
    ) -> asyncio.Future[tuple[OutboxItem, bool]]:
        cache = self._cache
        call = (sender, recipient, text, now, max_stored, max_stored_bytes, key, attachment)

        def job(conn: sqlite3.Connection) -> tuple[OutboxItem, bool]:
            return messages.add(conn, cache, call)

        # A future, not a coroutine: the session server's hot path waits on it without a task.
        return self._submit(job, defers=True)

    def add_messages(
        self, sender: str, sends: Sequence[SendCall], *, now: float, max_stored: int, max_stored_bytes: int
    ) -> asyncio.Future[list[tuple[OutboxItem, bool] | DmdsError]]:
        cache = self._cache

        def job(conn: sqlite3.Connection) -> list[tuple[OutboxItem, bool] | DmdsError]:
            return messages.add_many(
                conn, cache, sender, sends, now=now, max_stored=max_stored, max_stored_bytes=max_stored_bytes
            )

        return self._submit(job, defers=True, weight=len(sends))

    def pending(
        self, owner: str, after_seq: int, limit: int, *, ahead: bool = False
    ) -> asyncio.Future[list[OutboxItem]]:
        # A future, not a coroutine: the job is queued now, not one loop pass later by a task.
        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            return messages.pending(conn, self._cache, owner, after_seq, limit)

        return self._submit(job, ahead=ahead)

    async def mark_delivered(
        self, owner: str, message_ids: list[int], now: float, offer_to: Callable[[str], bool] | None = None
    ) -> list[OutboxItem]:
        cache = self._cache

        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            me = messages.settling(conn, cache, owner, message_ids)
            if me is None:
                return []
            return messages.delivered(conn, cache, me, owner, message_ids, now=now, offer_to=offer_to)

        return await self._submit(job, defers=True)

    async def mark_read(self, owner: str, message_ids: list[int], now: float) -> list[OutboxItem]:
        cache = self._cache

        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            me = messages.settling(conn, cache, owner, message_ids)
            return [] if me is None else messages.read(conn, cache, me, message_ids, now)

        return await self._submit(job, defers=True)

    async def forget(self, receipts: list[OutboxItem]) -> None:
        # Lazy: a receipt pushed but not yet forgotten when the server dies is pushed again (once
        # more, never lost); a courier's cursor already skips it until then.
        await self._submit(lambda conn: messages.forget(conn, self._cache, receipts), lazy=True)

    async def history(
        self, alias: str, peer: str, before: float, limit: int, max_bytes: int = 1 << 20
    ) -> list[StoredMessage]:
        return await self._submit(
            lambda conn: messages.history(conn, alias, peer, before=before, limit=limit, max_bytes=max_bytes)
        )

    async def purge(self, delivered_before: float) -> int:
        return await self._submit(lambda conn: messages.purge(conn, delivered_before))

    # -- attachments --------------------------------------------------------------------------------------

    async def start_upload(self, owner: str, name: str, media_type: str, size: int, now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO attachments (owner_id, name, media_type, size, data, complete, created_at)"
                " SELECT id, ?, ?, ?, zeroblob(?), ?, ? FROM users WHERE alias = ?",
                (name, media_type, size, size, int(size == 0), now, owner),
            )
            if cur.rowcount == 0 or cur.lastrowid is None:
                raise UnknownUser(owner)
            return cur.lastrowid

        return await self._submit(job)

    async def append_upload(self, owner: str, upload: int, offset: int, data: bytes) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT a.received, a.size, a.complete FROM attachments a"
                " JOIN users u ON u.id = a.owner_id WHERE a.id = ? AND u.alias = ?",
                (upload, owner),
            ).fetchone()
            if row is None or row[2]:
                raise UnknownAttachment(f"upload {upload}")
            size = int(row[1])
            new_length = check_chunk(offset, int(row[0]), size, len(data))
            with conn.blobopen("attachments", "data", upload) as blob:
                blob.seek(offset)
                blob.write(data)
            conn.execute(
                "UPDATE attachments SET received = ?, complete = ? WHERE id = ?",
                (new_length, int(new_length == size), upload),
            )
            return new_length

        return await self._submit(job)

    async def attachment(self, attachment_id: int) -> AttachmentInfo | None:
        return await self._submit(lambda conn: messages.attachment_info(conn, attachment_id))

    async def read_attachment(self, reader: str, attachment_id: int, offset: int, length: int) -> bytes:
        def job(conn: sqlite3.Connection) -> bytes:
            row = conn.execute(
                "SELECT substr(a.data, ? + 1, ?) FROM attachments a WHERE a.id = ? AND a.complete = 1 AND ("
                " a.owner_id = (SELECT id FROM users WHERE alias = ?) OR EXISTS (SELECT 1 FROM messages m"
                "  WHERE m.attachment_id = a.id AND m.recipient_alias = ?))",
                (offset, length, attachment_id, reader, reader),
            ).fetchone()
            if row is None:
                raise UnknownAttachment(f"attachment {attachment_id}")
            return bytes(row[0])

        return await self._submit(job)
