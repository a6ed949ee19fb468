"""The PostgreSQL store's operator queries: readiness and the summary (`Store.ping`, `Store.summary`).

Jobs of the engine's batches, on the node's writing connection, like every other store call: a
readiness check that passes means requests get through too. The counts come from the per-user
counters the message functions keep (one pass over `users`); the oldest undelivered message is one
seek of the undelivered index per user with any waiting.
"""

from __future__ import annotations

import asyncpg

from dmds.core.model import StoreSummary
from dmds.stores.postgresql.engine import Batch


async def ping(conn: asyncpg.Connection, batch: Batch) -> None:
    await conn.fetchval("SELECT 1")


async def summary(conn: asyncpg.Connection, batch: Batch) -> StoreSummary:
    row = await conn.fetchrow(
        "SELECT count(*) AS users, coalesce(sum(stored_messages), 0) AS stored,"
        " coalesce(sum(stored_bytes), 0) AS bytes, pg_database_size(current_database()) AS size,"
        " min((SELECT m.sent_at FROM messages m WHERE m.recipient_id = u.id AND m.delivered_at IS NULL"
        "  ORDER BY m.seq LIMIT 1)) FILTER (WHERE u.stored_messages > 0) AS oldest"
        " FROM users u"
    )
    assert row is not None
    return StoreSummary(
        users=row["users"],
        stored_messages=int(row["stored"]),
        stored_bytes=int(row["bytes"]),
        oldest_undelivered=row["oldest"],
        size_bytes=int(row["size"]),
    )
