"""Moving up: copy a whole SQLite store into an empty PostgreSQL one, in one transaction.

Every account (with its password hash and counters), session token, blocked alias, stored and kept
message (with its seq), receipt not yet pushed (outbox rows and delivery receipt ranges: both
engines keep them in the same shape) and attachment goes across with its ids, so message ids, seqs
and tokens stay valid: clients resume against the new store as if nothing happened. The copy is all
or nothing, and it is checked: the row counts of both sides must agree before it commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from dmds.errors import StoreError
from dmds.settings import SyncMode
from dmds.stores.postgresql.engine import connect, migrate
from dmds.stores.sqlite.connection import DB_NAME
from dmds.stores.sqlite.connection import connect as sqlite_connect
from dmds.stores.sqlite.messages import DELIVERED_AT

#: Rows read from SQLite and sent with one COPY at a time: bounded memory for any store size.
CHUNK = 5000
#: Bytes of an attachment per chunk row on PostgreSQL.
ATTACHMENT_CHUNK = 256 * 1024

_TABLES: list[tuple[str, str, list[str]]] = [
    (
        "users",
        "SELECT id, alias, full_name, birth_date, registered_at, password_hash, last_message_id,"
        " stored_messages, stored_bytes FROM users ORDER BY id",
        ["id", "alias", "full_name", "birth_date", "registered_at", "password_hash", "last_message_id",
         "stored_messages", "stored_bytes"],
    ),
    (
        "attachments",
        "SELECT id, owner_id, name, media_type, size, received, complete, created_at FROM attachments"
        " ORDER BY id",
        ["id", "owner_id", "name", "media_type", "size", "received", "complete", "created_at"],
    ),
    (
        "messages",
        # A message's seq is its row id on SQLite (schema 4); PostgreSQL keeps it in a column.
        "SELECT id, recipient_id, recipient_alias, message_id, sender_id, sender_alias, client_key,"
        f" pair, text, attachment_id, size, sent_at, {DELIVERED_AT}, read_at, id"
        " FROM messages ORDER BY id",
        ["id", "recipient_id", "recipient_alias", "message_id", "sender_id", "sender_alias", "client_key",
         "pair", "text", "attachment_id", "size", "sent_at", "delivered_at", "read_at", "seq"],
    ),
    (
        # Read receipts, and delivery receipts of SQLite's schema 4, one row each on both sides.
        "outbox",
        "SELECT seq, owner_id, kind, message_id, sender_alias, sender_id, ref FROM outbox ORDER BY seq",
        ["seq", "owner_id", "kind", "message_id", "sender_alias", "sender_id", "ref"],
    ),
    (
        # Delivery receipts as ranges on both sides (schema 5 on each): copied as they are.
        "receipts",
        "SELECT owner_id, peer_id, upto, pushed, seq FROM receipts ORDER BY owner_id, peer_id",
        ["owner_id", "peer_id", "upto", "pushed", "seq"],
    ),
    (
        "sessions",
        "SELECT token_hash, user_id, created_at, expires_at FROM sessions",
        ["token_hash", "user_id", "created_at", "expires_at"],
    ),
    (
        # Blocks name aliases, registered or not (schema 6 on each side).
        "blocked_aliases",
        "SELECT alias, blocked_at FROM blocked_aliases ORDER BY alias",
        ["alias", "blocked_at"],
    ),
]  # fmt: skip


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)
    attachment_bytes: int = 0

    def lines(self) -> list[str]:
        out = [f"{table}: {count:,}" for table, count in self.rows.items()]
        out.append(f"attachment bytes: {self.attachment_bytes:,}")
        return out


def _open_source(data_dir: Path) -> sqlite3.Connection:
    path = data_dir / DB_NAME
    if not path.exists():
        raise StoreError(f"no SQLite store at {path}")
    try:
        # The store's own opening: its migrations, and its exclusive lock, so that a server still
        # running on this directory is refused rather than copied mid-write.
        return sqlite_connect(path, SyncMode.FULL)
    except sqlite3.OperationalError as exc:
        raise StoreError(
            f"cannot open {path} ({exc}): is a server still running on it? Stop it first"
        ) from None


async def copy_sqlite_to_postgres(data_dir: Path, url: str) -> CopyReport:
    source = await asyncio.to_thread(_open_source, data_dir)
    try:
        conn = await connect(url, 10.0)
        try:
            await migrate(conn)
            return await _copy(source, conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"copy failed, nothing was copied: {exc}") from None
        finally:
            await conn.close()
    finally:
        source.close()


async def _copy(source: sqlite3.Connection, conn: asyncpg.Connection) -> CopyReport:
    report = CopyReport()
    async with conn.transaction():
        for table, _, _ in _TABLES:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise StoreError(f"the target is not empty (its {table} table has rows): refusing to copy")
        for table, select, columns in _TABLES:
            report.rows[table] = await _copy_table(source, conn, table, select, columns)
        report.attachment_bytes = await _copy_attachment_data(source, conn)
        await _check_counts(source, conn, report)
        # Identities and the outbox sequence go on above what was copied.
        for table in ("users", "attachments", "messages"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false)"
                f" FROM {table}"
            )
        # Messages, receipt rows and ranges share the seqs (as on SQLite): go on above them all.
        seqs = (
            "SELECT recipient_id AS owner_id, seq FROM messages UNION ALL SELECT owner_id, seq FROM outbox"
            " UNION ALL SELECT owner_id, seq FROM receipts"
        )
        await conn.execute(f"SELECT setval('outbox_seq', coalesce(max(seq), 0) + 1, false) FROM ({seqs}) s")
        # Each owner's last seq, which new items name as the one before them (schema 4). The highest
        # of any item of theirs: too high costs a courier one read, too low would let it skip one.
        await conn.execute(
            "UPDATE users u SET last_seq = s.top"
            f" FROM (SELECT owner_id, max(seq) AS top FROM ({seqs}) a GROUP BY owner_id) s"
            " WHERE s.owner_id = u.id"
        )
    return report


async def _copy_table(
    source: sqlite3.Connection, conn: asyncpg.Connection, table: str, select: str, columns: list[str]
) -> int:
    cursor = source.execute(select)
    total = 0
    while rows := cursor.fetchmany(CHUNK):
        records: list[tuple[Any, ...]] = rows
        if table == "attachments":
            records = [(*r[:6], bool(r[6]), r[7]) for r in rows]
        elif table == "messages":
            # PostgreSQL's text cannot hold SQLite's NUL between the two aliases of `pair`: a space
            # (aliases have none) takes its place.
            records = [(*r[:7], r[7].replace("\0", " "), *r[8:]) for r in rows]
        await conn.copy_records_to_table(table, records=records, columns=columns)
        total += len(records)
    return total


async def _copy_attachment_data(source: sqlite3.Connection, conn: asyncpg.Connection) -> int:
    copied = 0
    ids = [row[0] for row in source.execute("SELECT id FROM attachments WHERE received > 0 ORDER BY id")]
    for attachment_id in ids:
        received = source.execute(
            "SELECT received FROM attachments WHERE id = ?", (attachment_id,)
        ).fetchone()[0]
        with source.blobopen("attachments", "data", attachment_id, readonly=True) as blob:
            start = 0
            while start < received:
                data = blob.read(min(ATTACHMENT_CHUNK, received - start))
                await conn.execute(
                    "INSERT INTO attachment_chunks (attachment_id, start, data) VALUES ($1, $2, $3)",
                    attachment_id,
                    start,
                    data,
                )
                start += len(data)
                copied += len(data)
    return copied


async def _check_counts(source: sqlite3.Connection, conn: asyncpg.Connection, report: CopyReport) -> None:
    selects = {table: select for table, select, _ in _TABLES}
    for table in report.rows:
        ours = source.execute(f"SELECT count(*) FROM ({selects[table]})").fetchone()[0]
        theirs = await conn.fetchval(f"SELECT count(*) FROM {table}")
        if ours != theirs:
            raise StoreError(f"copy check failed: {table} has {ours} rows in SQLite, {theirs} in PostgreSQL")
    expected = source.execute("SELECT coalesce(sum(received), 0) FROM attachments").fetchone()[0]
    if expected != report.attachment_bytes:
        raise StoreError(f"copy check failed: {expected} attachment bytes, {report.attachment_bytes} copied")
