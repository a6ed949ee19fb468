"""What runs on a stopped SQLite store: a backup made by `dmds backup` itself, and `dmds restore`.

A running server holds its database's exclusive lock (locking_mode=EXCLUSIVE): opening the
database here in the same mode fails with "database is locked" while it runs, which is how both
commands know that a server owns the data dir. Opening it also replays a WAL left by a crash, so
what a killed server acknowledged is in the backup, and in the database kept aside by a restore.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from dmds.stores.sqlite.backup import BackupError, BackupReport, Direct, StoreSummary, inspect, write_backup
from dmds.stores.sqlite.connection import DB_NAME

#: Seconds to wait for the store's lock: a server holds it for as long as it runs, so waiting
#: longer would only delay the answer "a server owns it".
LOCK_TIMEOUT_S = 0.2


class StoreInUse(BackupError):
    """A running server owns the data dir."""


def _open_stopped(path: Path) -> sqlite3.Connection:
    """The store at `path`, opened as the server opens it (exclusively); StoreInUse if a server has it."""
    if not path.is_file():
        raise BackupError(f"no store at {path}")
    try:
        # A short timeout: a server holds its lock for as long as it runs, waiting is no use.
        conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from exc
    try:
        # Before the first read, as the server does: the WAL index then lives in our heap.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc):
            raise StoreInUse(f"a running server owns {path}") from exc
        raise BackupError(f"cannot open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BackupError(f"{path} is not a SQLite database, or a damaged one: {exc}") from exc
    return conn


def backup_stopped(data_dir: Path, dest: Path, *, force: bool, step_pages: int) -> BackupReport:
    """`dmds backup` when no server runs on `data_dir`: the same copy, from a connection of our own."""
    conn = _open_stopped(data_dir / DB_NAME)
    try:
        return write_backup(dest, Direct(conn), force=force, step_pages=step_pages)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class RestoreReport:
    path: Path
    summary: StoreSummary
    #: where the database that was there before now is, if there was one
    kept: Path | None

    def line(self) -> str:
        s = self.summary
        kept = f"; the previous database is kept as {self.kept}" if self.kept else ""
        return (
            f"restored into {self.path}: schema {s.schema}, {s.users:,} users, {s.messages:,} messages{kept}"
        )


def restore(source: Path, data_dir: Path) -> RestoreReport:
    """Put the backup `source` in place as `data_dir`'s database: checked first (a copy of it, so
    that nothing is created beside `source`), the database there before renamed aside, never
    deleted. Refuses while a server owns `data_dir`. A backup of an older schema is migrated by
    the next start, as any store is."""
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    wal = Path(f"{source}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise BackupError(
            f"{wal} lies beside {source}: that is a live or uncleanly stopped database, not a backup "
            "(part of it is in its -wal file); make a backup of it with dmds backup"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    live = data_dir / DB_NAME
    if live.exists():
        _open_stopped(live).close()  # refuses if a server runs; else replays and removes its WAL
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = data_dir / f".{DB_NAME}.restore.{secrets.token_hex(4)}"
    kept: Path | None = None
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        summary = _check(tmp)
        if live.exists():
            kept = data_dir / f"{DB_NAME}.before-restore-{stamp}"
            for n in itertools.count(2):
                if not kept.exists():
                    break
                kept = data_dir / f"{DB_NAME}.before-restore-{stamp}-{n}"  # a second one this second
            os.rename(live, kept)
            for suffix in ("-wal", "-shm"):  # none after a clean close; kept with it if there are
                if Path(f"{live}{suffix}").exists():
                    os.rename(f"{live}{suffix}", f"{kept}{suffix}")
        try:
            os.link(tmp, live)  # not over a database a server may have created meanwhile
            tmp.unlink()
        except FileExistsError:
            raise StoreInUse(
                f"{live} appeared while restoring: is a server starting on {data_dir}?"
            ) from None
        except OSError:  # a file system without hard links: the name was free a moment ago
            os.rename(tmp, live)
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        aside = f"; the previous database is {kept}" if kept is not None and not live.exists() else ""
        raise BackupError(f"cannot restore into {data_dir}: {exc}{aside}") from exc
    finally:
        for leftover in (Path(f"{tmp}{suffix}") for suffix in ("", "-journal", "-wal", "-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink()
    return RestoreReport(live, summary, kept)


def _check(path: Path) -> StoreSummary:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open the copy of the backup: {exc}") from exc
    try:
        # A copy of a live file (not made by dmds backup) says WAL in its header: rollback mode,
        # so that it is one self-contained file.
        conn.execute("PRAGMA journal_mode=DELETE")
        return inspect(conn)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"not a SQLite database, or a damaged one: {exc}") from exc
    finally:
        conn.close()
