"""`dmds migrate` and `dmds store copy`: the store's schema and moving from SQLite to PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from dmds.errors import StoreError


def _store_url(args: argparse.Namespace) -> str:
    url: str = args.store or os.environ.get("DMDS_STORE", "")
    return url


def _migrate(args: argparse.Namespace) -> int:
    url = _store_url(args)
    try:
        if url:
            from dmds.stores.postgresql.engine import connect, migrate, migrations, redact

            async def run() -> list[str]:
                conn = await connect(url, 10.0)
                try:
                    return await migrate(conn)
                finally:
                    await conn.close()

            applied = asyncio.run(run())
            where, latest = redact(url), migrations()[-1][0]
        else:
            from dmds.stores.sqlite.connection import DB_NAME, migrate_path

            applied, latest = migrate_path(args.data_dir / DB_NAME)
            where = str(args.data_dir / DB_NAME)
    except StoreError as exc:
        print(f"dmds migrate: {exc}", file=sys.stderr)
        return 1
    if applied:
        print(f"{where}: applied {', '.join(applied)}; now at version {latest}")
    else:
        print(f"{where}: up to date at version {latest}; nothing applied")
    return 0


def _copy(args: argparse.Namespace) -> int:
    from dmds.stores.copy import copy_sqlite_to_postgres
    from dmds.stores.postgresql.engine import redact

    if not args.to.startswith(("postgresql://", "postgres://")):
        print(f"dmds store copy: --to must be a postgresql:// URL, not {args.to!r}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(copy_sqlite_to_postgres(args.source, args.to))
    except StoreError as exc:
        print(f"dmds store copy: {exc}", file=sys.stderr)
        return 1
    print(f"copied {args.source} to {redact(args.to)}, checked:")
    for line in report.lines():
        print(f"  {line}")
    print(f"start the nodes with: dmds serve --store {redact(args.to)}")
    return 0


def add_parsers(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate",
        help="apply the store's schema migrations and say what was done",
        description="Servers apply migrations at start; this applies them explicitly (before a rolling "
        "upgrade, say) and prints what it did.",
    )
    migrate.add_argument(
        "--store", default=None, help="postgresql://USER@HOST:PORT/DB (default: env DMDS_STORE, else SQLite)"
    )
    migrate.add_argument(
        "--data-dir", type=Path, default=Path("dmds-data"), help="the SQLite store's directory"
    )
    migrate.set_defaults(func=_migrate)

    store = sub.add_parser("store", help="move a store between engines")
    actions = store.add_subparsers(dest="action", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy a SQLite store into an empty PostgreSQL one",
        description="Copies every account, password hash, session token, stored and kept message, receipt "
        "and attachment, with their ids, in one transaction, and checks the row counts. Stop the server "
        "on DATA_DIR first; the target must be empty.",
    )
    copy.add_argument("--from", dest="source", type=Path, required=True, metavar="DATA_DIR")
    copy.add_argument("--to", required=True, metavar="postgresql://USER@HOST:PORT/DB")
    copy.set_defaults(func=_copy)
