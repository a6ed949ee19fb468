"""`dmds backup` and `dmds restore`: a consistent copy of the SQLite store, and putting one back.

A running server is asked for the backup through its data dir's control socket (it alone can read
its database: `dmds.stores.sqlite.backup`); a stopped store is copied by this command itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dmds.settings import StoreSettings

POSTGRESQL = (
    "the PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, or base backups with "
    "WAL archiving): see docs/operations.md, Backups"
)


def _backup(args: argparse.Namespace) -> int:
    from dmds.server import control
    from dmds.stores.sqlite.backup import BackupError, BackupReport
    from dmds.stores.sqlite.offline import StoreInUse, backup_stopped

    if os.environ.get("DMDS_STORE"):
        print(f"dmds backup: DMDS_STORE is set: {POSTGRESQL}", file=sys.stderr)
        return 2
    dest: Path = args.dest.absolute()
    tty = sys.stderr.isatty()

    def progress(state: dict[str, Any]) -> None:
        remaining, total = state.get("remaining"), state.get("total")
        if tty and isinstance(remaining, int) and isinstance(total, int) and total:
            done = "checking the copy" if remaining == 0 else f"{100 * (total - remaining) // total}%"
            print(f"\rdmds backup: {done} of {total} pages ", end="", file=sys.stderr, flush=True)

    request = {"op": "backup", "dest": str(dest), "force": args.force}
    try:
        answer = control.call(args.data_dir, request, timeout_s=args.timeout, on_progress=progress)
    except control.ControlUnavailable:
        answer = None  # no server: the store is stopped, copy it here
    except (OSError, ValueError) as exc:  # a hung server (timeout), a refused connection, bad JSON
        print(f"\ndmds backup: no answer from the server on {control.socket_path(args.data_dir)}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr)
    if answer is None:
        try:
            report = backup_stopped(
                args.data_dir, dest, force=args.force, step_pages=StoreSettings().backup_step_pages
            )
        except StoreInUse:
            print(f"dmds backup: a running server owns {args.data_dir} but does not answer on "
                  f"{control.socket_path(args.data_dir)}: is it an older dmds? Stop or upgrade it.",
                  file=sys.stderr)  # fmt: skip
            return 1
        except BackupError as exc:
            print(f"dmds backup: {exc}", file=sys.stderr)
            return 1
        print(f"backup of the stopped store: {report.line()}")
        return 0
    if not answer.get("ok"):
        print(f"dmds backup: {answer.get('error', 'the server gave no reason')}", file=sys.stderr)
        return 1
    report = BackupReport(**answer["report"])
    print(f"backup of the running server's store: {report.line()}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from dmds.server import control
    from dmds.stores.sqlite.backup import BackupError
    from dmds.stores.sqlite.offline import StoreInUse, restore

    running = f"a server is running on {args.data_dir}: stop it first, then restore"
    if control.server_answers(args.data_dir):
        print(f"dmds restore: {running}", file=sys.stderr)
        return 1
    try:
        report = restore(args.source, args.data_dir)
    except StoreInUse:
        print(f"dmds restore: {running}", file=sys.stderr)
        return 1
    except BackupError as exc:
        print(f"dmds restore: {args.source}: {exc}", file=sys.stderr)
        return 1
    print(report.line())
    print(f"start the server with: dmds serve --data-dir {args.data_dir}")
    return 0


def add_parsers(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="a consistent copy of the SQLite store, from the running server or a stopped store",
        description="Copies the SQLite store of DATA_DIR to DEST while the server runs (the server "
        "makes the copy, asked through its control socket, pausing its store only a few milliseconds "
        "at a time), or directly if no server runs. The copy holds every message acknowledged before "
        "the backup began, is checked (integrity_check), and appears at DEST only when complete. "
        "DEST may be a directory: the file is then named by the time. The PostgreSQL store is backed "
        "up with pg_dump or base backups (docs/operations.md).",
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="the backup file to write, or a directory")
    backup.add_argument(
        "--data-dir", type=Path, default=Path("dmds-data"), help="the store's directory (default: dmds-data)"
    )
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    backup.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each answer of a running server, which reports progress every "
        "second (default: 60)",
    )
    backup.set_defaults(func=_backup)

    restore = sub.add_parser(
        "restore",
        help="put a backup back as the SQLite store of a stopped server",
        description="Checks the backup SRC (a SQLite file with the dmds tables, integrity_check, a "
        "schema no newer than this dmds; an older one is migrated when the server starts), keeps the "
        "database DATA_DIR has aside (renamed with a time stamp, never deleted), and puts SRC in its "
        "place. Refuses while a server runs on DATA_DIR.",
    )
    restore.add_argument("source", type=Path, metavar="SRC", help="a file written by dmds backup")
    restore.add_argument(
        "--data-dir", type=Path, default=Path("dmds-data"), help="the store's directory (default: dmds-data)"
    )
    restore.set_defaults(func=_restore)
