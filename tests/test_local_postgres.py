"""The throw-away PostgreSQL the tests, benchmarks and `dmds cluster` start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from dmds.cluster.postgres import LocalPostgres, PostgresError


async def _roundtrip(url: str, value: int | None = None) -> int | None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (v int)")
        if value is not None:
            await conn.execute("INSERT INTO kept VALUES ($1)", value)
        return await conn.fetchval("SELECT max(v) FROM kept")  # type: ignore[no-any-return]
    finally:
        await conn.close()


def test_crash_and_restart_keep_committed_data_and_the_port() -> None:
    server = LocalPostgres().start()
    try:
        url = server.create_database("kept")
        assert asyncio.run(_roundtrip(url, 41)) == 41
        port, pid = server.port, server.pid()
        server.kill()  # SIGKILL: no shutdown checkpoint, WAL recovery at the next start
        with pytest.raises(OSError, match=str(port)):
            asyncio.run(_roundtrip(url))
        server.restart()
        assert server.port == port
        assert server.pid() != pid
        assert asyncio.run(_roundtrip(url, 42)) == 42
    finally:
        server.stop()
    assert not server.root.exists()  # a temp dir of its own, removed


def test_a_taken_fixed_port_is_a_clear_error(postgres_server: LocalPostgres, tmp_path: Path) -> None:
    clash = LocalPostgres(tmp_path / "pg", port=postgres_server.port)
    with pytest.raises(PostgresError, match="pg_ctl"):
        clash.start()
    clash.stop()
