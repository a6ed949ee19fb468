"""Opening the SQLite file: the pragmas every connection of a server needs, and the migrations.

One server process owns the file (exclusive locking); `dmds migrate`, the offline admin commands and
the copy to PostgreSQL open it the same way while no server runs.
"""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources
from pathlib import Path

from dmds.errors import StoreError
from dmds.settings import SyncMode

log = logging.getLogger(__name__)

DB_NAME = "dmds.sqlite3"


def connect(path: Path, sync: SyncMode, *, migrate: bool = True) -> sqlite3.Connection:
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
    # The hot pages of the message tables and their indexes stay in memory (the default is 2 MiB).
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    if migrate:
        apply_migrations(conn)
    return conn


def apply_migrations(conn: sqlite3.Connection) -> tuple[list[str], int]:
    """Apply migrations/NNN_*.sql above the database's user_version, each in its own transaction.
    Returns the names applied and the version reached."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    folder = resources.files("dmds.stores.sqlite").joinpath("migrations")
    applied = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        number = int(entry.name.split("_", 1)[0])
        if number > version:
            sql = entry.read_text(encoding="utf-8")
            conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
            log.info("store schema migrated to version %d", number)
            applied.append(entry.name)
            version = number
    return applied, version


def migrate_path(path: Path) -> tuple[list[str], int]:
    """`dmds migrate` on a SQLite store: (names applied, version reached)."""
    try:
        conn = connect(path, SyncMode.FULL, migrate=False)
        try:
            return apply_migrations(conn)
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
