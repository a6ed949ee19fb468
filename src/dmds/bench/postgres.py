"""A fresh PostgreSQL database for a benchmark run: on a server the bench starts, or on one it is given."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from dmds.cluster.postgres import LocalPostgres


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(store: str, workdir: Path) -> Iterator[tuple[str, LocalPostgres | None]]:
    """(URL of a new empty database, the server if the bench started it: to measure or kill it).
    `store`: ``local``, or a postgresql:// URL of a server where databases may be created."""
    if store == "local":
        from dmds.cluster.postgres import LocalPostgres  # noqa: PLC0415

        server = LocalPostgres(workdir / "postgres")
        server.start()
        try:
            yield server.create_database("dmds_bench"), server
        finally:
            server.stop()
        return
    if not store.startswith(("postgresql://", "postgres://")):
        raise RuntimeError(f"--store: 'local' or a postgresql:// URL, not {store!r}")
    name = f"dmds_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(store, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(store, name), None
    finally:
        asyncio.run(_admin(store, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
