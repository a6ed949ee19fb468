"""The PostgreSQL store's queries for the admin commands: users by page, one user, blocked aliases.

Jobs of the engine's batches, on the node's writing connection, like every other store call.
Blocking also deletes the alias's presence row and says so in the batch's notification, so every
node stops serving the user (the node that served them closes their connection), as an UNREGISTER
does.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dmds.core.model import UserInfo
from dmds.stores.postgresql.engine import Batch

_USER = (
    "SELECT u.alias, u.full_name, u.registered_at, u.stored_messages, u.stored_bytes,"
    " u.password_hash IS NOT NULL, b.alias IS NOT NULL FROM users u"
    " LEFT JOIN blocked_aliases b ON b.alias = u.alias"
)


def _info(row: Any) -> UserInfo:
    alias, name, registered, count, size, protected, blocked = row
    return UserInfo(alias, name, registered, int(count), int(size), protected, blocked)


async def users(conn: asyncpg.Connection, prefix: str, after: str, limit: int) -> list[UserInfo]:
    rows = await conn.fetch(
        f"{_USER} WHERE u.alias > $1 AND starts_with(u.alias, $2) ORDER BY u.alias LIMIT $3",
        after,
        prefix,
        limit,
    )
    return [_info(row) for row in rows]


async def user_info(conn: asyncpg.Connection, alias: str) -> UserInfo | None:
    row = await conn.fetchrow(f"{_USER} WHERE u.alias = $1", alias)
    return None if row is None else _info(row)


async def block(conn: asyncpg.Connection, batch: Batch, alias: str, now: float) -> bool:
    added = await conn.fetchval(
        "INSERT INTO blocked_aliases (alias, blocked_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        " RETURNING alias",
        alias,
        now,
    )
    # Its tokens go: unblocked, the user logs in with the password again.
    await conn.execute("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE alias = $1)", alias)
    if await conn.fetchval("DELETE FROM presence WHERE alias = $1 RETURNING alias", alias) is not None:
        batch.presence.append(f"- {alias}")
    return added is not None


async def unblock(conn: asyncpg.Connection, alias: str) -> bool:
    return (
        await conn.fetchval("DELETE FROM blocked_aliases WHERE alias = $1 RETURNING alias", alias) is not None
    )


async def blocked(conn: asyncpg.Connection, prefix: str, limit: int) -> list[tuple[str, float]]:
    rows = await conn.fetch(
        "SELECT alias, blocked_at FROM blocked_aliases WHERE starts_with(alias, $1) ORDER BY alias LIMIT $2",
        prefix,
        limit,
    )
    return [(str(alias), float(at)) for alias, at in rows]
