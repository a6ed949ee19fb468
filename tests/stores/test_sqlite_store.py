"""The SQLite store on a real database file: what the message path's batching must keep true."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dmds.core.model import ItemKind, User
from dmds.errors import LimitExceeded, StoreError
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore
from dmds.stores.sqlite import store as sqlite_store


async def _store(path: Path) -> SqliteStore:
    return await SqliteStore.open(path, StoreSettings(sync=SyncMode.FULL))


async def test_no_outbox_seq_is_handed_out_twice_after_its_item_was_deleted(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.add_message("ana", "bob", "m1", now=1.0, max_stored=3, max_stored_bytes=1_000_000)
    [receipt] = await store.mark_delivered("bob", [1], now=2.0)
    await store.close()

    # A new process: the receipt is pushed and forgotten (the highest seq in the table goes) before
    # anything new is stored. A courier that pushed that seq skips any item that reuses it.
    store = await _store(tmp_path)
    await store.remove_items([receipt.seq])
    item, new = await store.add_message("ana", "bob", "m2", now=3.0, max_stored=3, max_stored_bytes=1_000_000)
    assert new
    assert item.seq > receipt.seq
    await store.close()


async def test_refused_messages_change_nothing_and_counters_survive_a_restart(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(1, 4):
        item, _ = await store.add_message(
            "ana", "bob", f"m{n}", now=float(n), key=f"k{n}", max_stored=3, max_stored_bytes=1_000_000
        )
        assert item.message_id == n
    with pytest.raises(LimitExceeded):
        await store.add_message(
            "ana", "bob", "m4", now=4.0, key="k4", max_stored=3, max_stored_bytes=1_000_000
        )
    await store.close()

    store = await _store(tmp_path)
    # The cached counters were written with the batch: the limit still holds, the ids go on.
    [_, _, receipt] = await store.mark_delivered("bob", [1, 2, 3, 99], now=5.0)
    assert (receipt.kind, receipt.message_id, receipt.owner) == (ItemKind.DELIVERED, 3, "ana")
    item, new = await store.add_message(
        "ana", "bob", "m4", now=6.0, key="k4", max_stored=3, max_stored_bytes=1_000_000
    )
    assert (item.message_id, new) == (4, True)
    again, new = await store.add_message(
        "ana", "bob", "m4", now=7.0, key="k4", max_stored=3, max_stored_bytes=1_000_000
    )
    assert (again.message_id, new) == (4, False)
    assert [i.message_id for i in await store.pending("bob", 0, 10) if i.kind is ItemKind.MESSAGE] == [4]
    await store.close()


async def test_a_failed_batch_acknowledges_nothing_and_leaves_no_trace(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    # A lone surrogate cannot be written as UTF-8: not a domain error but a failure of the batch,
    # which takes the good message of the same batch down with it (nothing is half-committed).
    good = store.add_message("ana", "bob", "fine", now=1.0, max_stored=3, max_stored_bytes=1_000_000)
    bad = store.add_message("ana", "bob", "\ud800", now=1.0, max_stored=3, max_stored_bytes=1_000_000)
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert [type(o) for o in outcomes] == [StoreError, StoreError]
    # The cached counters were dropped with the rollback: ids and limits carry on from what is stored.
    for n in (1, 2, 3):
        item, _ = await store.add_message(
            "ana", "bob", f"m{n}", now=2.0, max_stored=3, max_stored_bytes=1_000_000
        )
        assert item.message_id == n
    with pytest.raises(LimitExceeded):
        await store.add_message("ana", "bob", "m4", now=3.0, max_stored=3, max_stored_bytes=1_000_000)
    assert [i.text for i in await store.pending("bob", 0, 10)] == ["m1", "m2", "m3"]
    await store.close()


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
    await asyncio.wait_for(store.remove_items([receipt.seq]), 10 * sqlite_store.LAZY_S + 1)
    assert await store.pending("ana", 0, 10) == []
    await store.close()
