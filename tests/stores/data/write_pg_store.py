"""Writes a PostgreSQL store with data of every kind, as an SQL dump, and what its users had waiting
and their counters, as JSON.

Run with the code of the schema to freeze, e.g. schema 4 as of commit 150edf2:

    git worktree add /tmp/old 150edf2
    PYTHONPATH=/tmp/old/src python tests/stores/data/write_pg_store.py tests/stores/data/pg_schema4

It starts a throw-away PostgreSQL of its own. The migration tests load the dump into an empty
database, open it with today's store and compare.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg

from dmds.cluster.postgres import LocalPostgres, find_bin_dir
from dmds.core.model import User
from dmds.settings import StoreSettings
from dmds.stores.postgresql import PostgresStore

MAX_STORED = 100
ALIASES = ("ana", "bob", "carl", "dora", "eve")


async def fill(url: str) -> dict[str, object]:
    store = await PostgresStore.open(url, StoreSettings(), "writer")
    for alias in ("ana", "bob", "carl", "eve"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.register(User("dora", "Dora", "03/04/1990"), password_hash="$argon2id$fake")
    await store.create_session("dora", b"t" * 32, now=1.0, expires_at=4e9)
    upload = await store.start_upload("carl", "a.txt", "text/plain", 5, now=1.0)
    await store.append_upload("carl", upload, 0, b"hello")
    t = 10.0

    async def send(
        sender: str, recipient: str, text: str, key: str | None = None, attachment: int = 0
    ) -> None:
        nonlocal t
        t += 1
        await store.add_message(
            sender, recipient, text, now=t, key=key, attachment=attachment,
            max_stored=MAX_STORED, max_stored_bytes=1_000_000,
        )  # fmt: skip

    for sender, recipient, text, key in [
        ("ana", "bob", "a1", None), ("ana", "bob", "a2", "k-a2"), ("carl", "bob", "c1", None),
        ("bob", "ana", "b1", None), ("bob", "ana", "b2", "k-b2"), ("dora", "ana", "d1", "k-d1"),
        ("ana", "dora", "a3", None), ("carl", "dora", "c2", None),
    ]:  # fmt: skip
        await send(sender, recipient, text, key)
    await send("carl", "ana", "file", attachment=upload)
    for n in (1, 2, 3):
        await send("eve", "bob", f"e{n}", f"k-e{n}")  # bob's 4, 5, 6
    # ana received everything and read some: bob, dora and carl hold receipts not yet pushed.
    await store.mark_delivered("ana", [1, 2, 3, 4], now=20.0)
    await store.mark_read("ana", [1, 3], now=21.0)
    for n in range(4):
        await send("carl", "bob", f"late {n}")  # bob's 7..10
    # bob received a1: ana has its receipt pushed and forgotten; a2, c1 and e1 still wait for bob.
    await store.forget(await store.mark_delivered("bob", [1], now=22.0))
    # bob acked e2 above e1 (out of order): schema 4 receipts it at once, one outbox row.
    await store.mark_delivered("bob", [5], now=23.0)
    await send("eve", "ana", "to ana, waiting")
    waiting = {}
    for alias in ALIASES:
        items = await store.pending(alias, 0, 100)
        waiting[alias] = [[i.seq, i.kind.name, i.message_id, i.peer, i.text, i.key, i.sent_at] for i in items]
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        counters = {
            row["alias"]: list(row.values())[1:]
            for row in await conn.fetch(
                "SELECT alias, last_message_id, stored_messages, stored_bytes, last_seq FROM users"
                " ORDER BY alias"
            )
        }
        version = await conn.fetchval("SELECT max(version) FROM dmds_schema")
    finally:
        await conn.close()
    return {"version": version, "attachment": upload, "waiting": waiting, "counters": counters}


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with LocalPostgres() as server:
        url = server.create_database("dmds_old")
        facts = asyncio.run(fill(url))
        dump = subprocess.run(
            [str(find_bin_dir() / "pg_dump"), "--no-owner", "--no-privileges", "--inserts", "-d", url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    # Without psql's meta-commands (pg_dump's \restrict): plain SQL, which the tests run as it is.
    sql = "".join(line for line in dump.stdout.splitlines(keepends=True) if not line.startswith("\\"))
    (out / "dump.sql").write_text(sql)
    (out / "facts.json").write_text(json.dumps(facts) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
