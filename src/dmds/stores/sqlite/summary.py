"""The SQLite store's operator queries: readiness and the summary (`Store.ping`, `Store.summary`).

They run as jobs of the store's batches, on the event loop like every statement, so they must stay
cheap: the counts come from the per-user counters the message path keeps (one pass over `users`),
and the oldest undelivered message is one seek of the undelivered index per user with any waiting.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

from dmds.core.model import StoreSummary


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def summary(conn: sqlite3.Connection) -> StoreSummary:
    users, stored, size = conn.execute(
        "SELECT count(*), coalesce(sum(stored_messages), 0), coalesce(sum(stored_bytes), 0) FROM users"
    ).fetchone()
    oldest = conn.execute(
        "SELECT min((SELECT m.sent_at FROM messages m WHERE m.recipient_id = u.id"
        " AND m.message_id > u.delivered_upto AND m.delivered_at IS NULL ORDER BY m.message_id LIMIT 1))"
        " FROM users u WHERE u.stored_messages > 0"
    ).fetchone()[0]
    return StoreSummary(
        users=users,
        stored_messages=stored,
        stored_bytes=size,
        oldest_undelivered=oldest,
        size_bytes=_disk_bytes(conn),
    )


def _disk_bytes(conn: sqlite3.Connection) -> int:
    path = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    total = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL at the moment
            total += os.stat(name).st_size
    return total
