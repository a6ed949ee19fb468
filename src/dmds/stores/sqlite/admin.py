"""The SQLite store's queries for the admin commands: users by page, one user, blocked aliases.

Jobs of the store's batches like every other call (so they see everything submitted before them
and the message path's counters, written before any job that does not defer its writes). Operator
requests only: a page is one range of the alias index.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from dmds.core.model import UserInfo

_USER = (
    "SELECT u.alias, u.full_name, u.registered_at, u.stored_messages, u.stored_bytes,"
    " u.password_hash IS NOT NULL, b.alias IS NOT NULL FROM users u"
    " LEFT JOIN blocked_aliases b ON b.alias = u.alias"
)


def _info(row: Any) -> UserInfo:
    alias, name, registered, count, size, protected, blocked = row
    return UserInfo(alias, name, registered, count, size, bool(protected), bool(blocked))


def users(conn: sqlite3.Connection, prefix: str, after: str, limit: int) -> list[UserInfo]:
    # alias >= prefix starts the index range; substr (not LIKE: case-insensitive, with wildcards)
    # keeps only the prefix's aliases.
    rows = conn.execute(
        f"{_USER} WHERE u.alias > ? AND u.alias >= ? AND substr(u.alias, 1, length(?)) = ?"
        " ORDER BY u.alias LIMIT ?",
        (after, prefix, prefix, prefix, limit),
    ).fetchall()
    return [_info(row) for row in rows]


def user_info(conn: sqlite3.Connection, alias: str) -> UserInfo | None:
    row = conn.execute(f"{_USER} WHERE u.alias = ?", (alias,)).fetchone()
    return None if row is None else _info(row)


def block(conn: sqlite3.Connection, alias: str, now: float) -> bool:
    added = conn.execute(
        "INSERT OR IGNORE INTO blocked_aliases (alias, blocked_at) VALUES (?, ?)", (alias, now)
    ).rowcount
    # Its tokens go: unblocked, the user logs in with the password again.
    conn.execute("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE alias = ?)", (alias,))
    return bool(added)


def unblock(conn: sqlite3.Connection, alias: str) -> bool:
    return bool(conn.execute("DELETE FROM blocked_aliases WHERE alias = ?", (alias,)).rowcount)


def blocked(conn: sqlite3.Connection, prefix: str, limit: int) -> list[tuple[str, float]]:
    rows = conn.execute(
        "SELECT alias, blocked_at FROM blocked_aliases WHERE alias >= ? AND substr(alias, 1, length(?)) = ?"
        " ORDER BY alias LIMIT ?",
        (prefix, prefix, prefix, limit),
    ).fetchall()
    return [(str(alias), float(at)) for alias, at in rows]
