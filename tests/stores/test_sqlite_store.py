"""What only the SQLite store has: its account cache and lazy housekeeping (the rest: test_store.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dmds.core.model import User
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore
from dmds.stores.sqlite import store as sqlite_store


async def _store(path: Path) -> SqliteStore:
    return await SqliteStore.open(path, StoreSettings(sync=SyncMode.FULL))


async def test_the_account_cache_starting_again_mid_batch_loses_no_counter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "MAX_CACHED_ACCOUNTS", 2)  # cleared at every third user
    store = await _store(tmp_path)
    aliases = ["ana", "bob", "carl", "dan"]
    for alias in aliases:
        await store.register(User(alias, alias.title(), "01/02/2000"))
    # One batch: every send loads two accounts, so the cache is cleared between sends of the batch.
    sends = [
        store.add_message(a, b, f"{a}>{b}", now=1.0, max_stored=10, max_stored_bytes=1_000_000)
        for _ in range(3)
        for a in aliases
        for b in aliases
        if a != b
    ]
    items = [item for item, _ in await asyncio.gather(*sends)]
    for b in aliases:
        ids = [i.message_id for i in items if i.owner == b]
        assert ids == list(range(1, 10))  # per recipient, gap-free, in order
        assert sorted(i.message_id for i in await store.pending(b, 0, 100)) == ids
    await store.close()


async def test_pushed_receipts_are_forgotten_lazily_but_surely(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.add_message("ana", "bob", "m1", now=1.0, max_stored=3, max_stored_bytes=1_000_000)
    [receipt] = await store.mark_delivered("bob", [1], now=2.0)
    # Nothing else to ride with: the removal starts a commit of its own after LAZY_S.
    await asyncio.wait_for(store.forget([receipt]), 10 * sqlite_store.LAZY_S + 1)
    assert await store.pending("ana", 0, 10) == []
    await store.close()
