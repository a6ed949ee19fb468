"""Writes a SQLite store with data of every kind, and what its users had waiting, as JSON.

Run with the code of the schema to freeze, e.g. schema 3 as of commit 1678a6b (schema 7: 418ae39):

    git worktree add /tmp/old 1678a6b
    PYTHONPATH=/tmp/old/src python tests/stores/data/write_store.py tests/stores/data/schema3

The migration tests open the result with today's store and compare.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from dmds.core.model import User
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore

MAX_STORED = 100


async def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    store = await SqliteStore.open(out, StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob", "carl"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.register(User("dora", "Dora", "03/04/1990"), password_hash="$argon2id$fake")
    await store.create_session("dora", b"t" * 32, now=1.0, expires_at=4e9)
    upload = await store.start_upload("carl", "a.txt", "text/plain", 5, now=1.0)
    await store.append_upload("carl", upload, 0, b"hello")
    t = 10.0
    for sender, recipient, text, key in [
        ("ana", "bob", "a1", None), ("ana", "bob", "a2", "k-a2"), ("carl", "bob", "c1", None),
        ("bob", "ana", "b1", None), ("bob", "ana", "b2", "k-b2"), ("dora", "ana", "d1", "k-d1"),
        ("ana", "dora", "a3", None), ("carl", "dora", "c2", None),
    ]:  # fmt: skip
        t += 1
        await store.add_message(
            sender, recipient, text, now=t, key=key, max_stored=MAX_STORED, max_stored_bytes=1_000_000
        )
    await store.add_message(
        "carl", "ana", "file", now=t + 1, attachment=upload, max_stored=MAX_STORED, max_stored_bytes=1_000_000
    )
    # ana received everything and read some: bob and dora hold receipts not yet pushed.
    await store.mark_delivered("ana", [1, 2, 3, 4], now=20.0)
    await store.mark_read("ana", [1, 3], now=21.0)
    # Messages stored after receipts: their row ids meet the receipts' seqs of the old counter.
    for n in range(4):
        await store.add_message(
            "carl", "bob", f"late {n}", now=21.5, max_stored=MAX_STORED, max_stored_bytes=1_000_000
        )
    # bob received a1: ana has its receipt pushed and forgotten, a2 and c1 still wait for bob.
    [pushed] = await store.mark_delivered("bob", [1], now=22.0)
    if hasattr(store, "remove_items"):  # schema 3's name
        await store.remove_items([pushed.seq])
    else:
        await store.forget([pushed])
    waiting = {}
    for alias in ("ana", "bob", "carl", "dora"):
        items = await store.pending(alias, 0, 100)
        waiting[alias] = [[i.kind.name, i.message_id, i.peer, i.text, i.key] for i in items]
    await store.close()
    (out / "waiting.json").write_text(json.dumps(waiting, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
