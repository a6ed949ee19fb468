"""asyncpg against psycopg 3 (async, binary) on the store's two shapes of work, side by side in one run:
single-row round trips (the account and session calls) and the message path's one array call per
batch. Run: .venv/bin/pip install 'psycopg[binary]' && .venv/bin/python pg_drivers.py URL"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
import psycopg

ROUND_TRIPS = 5000
BATCHES, PER_BATCH = 200, 100


async def with_asyncpg(url: str) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    start = time.perf_counter()
    for i in range(ROUND_TRIPS):
        await conn.fetchrow("SELECT password_hash FROM users WHERE alias = $1", f"u{i % 10}")
    single = (time.perf_counter() - start) / ROUND_TRIPS
    start = time.perf_counter()
    for b in range(BATCHES):
        async with conn.transaction():
            await conn.fetch(
                "SELECT * FROM dmds_add_messages($1, $2, $3, $4, $5, $6, $7, $8)",
                ["u0"] * PER_BATCH, ["u1"] * PER_BATCH, [f"m{b}"] * PER_BATCH, [None] * PER_BATCH,
                [0] * PER_BATCH, [1.0] * PER_BATCH, [10**9] * PER_BATCH, [10**12] * PER_BATCH,
            )  # fmt: skip
    batch = (time.perf_counter() - start) / (BATCHES * PER_BATCH)
    await conn.close()
    return single, batch


async def with_psycopg(url: str) -> tuple[float, float]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0)
    start = time.perf_counter()
    for i in range(ROUND_TRIPS):
        await (
            await conn.execute("SELECT password_hash FROM users WHERE alias = %s", (f"u{i % 10}",))
        ).fetchone()
    single = (time.perf_counter() - start) / ROUND_TRIPS
    start = time.perf_counter()
    for b in range(BATCHES):
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT * FROM dmds_add_messages(%s, %s, %s, %s::text[], %s::bigint[], %s, %s::bigint[], %s::bigint[])",
                (["u0"] * PER_BATCH, ["u1"] * PER_BATCH, [f"m{b}"] * PER_BATCH, [None] * PER_BATCH,
                 [0] * PER_BATCH, [1.0] * PER_BATCH, [10**9] * PER_BATCH, [10**12] * PER_BATCH),
                binary=True,
            )  # fmt: skip
            await cur.fetchall()
    batch = (time.perf_counter() - start) / (BATCHES * PER_BATCH)
    await conn.close()
    return single, batch


async def main(url: str) -> None:
    from dmds.stores.postgresql.engine import connect, migrate  # the schema and its functions

    conn = await connect(url, 10)
    await migrate(conn)
    for i in range(10):
        await conn.execute(
            "INSERT INTO users (alias, full_name, birth_date) VALUES ($1, 'x', '01/01/2000') ON CONFLICT DO NOTHING",
            f"u{i}",
        )
    await conn.close()
    for name, fn in [("asyncpg", with_asyncpg), ("psycopg", with_psycopg)] * 2:
        single, batch = await fn(url)
        print(f"{name:8} one row: {single * 1e6:6.1f} us/round trip   batch: {batch * 1e6:5.1f} us/message")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
