"""What only the SQLite store has: its account cache and lazy housekeeping (the rest: test_store.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dmds.core.model import User
from dmds.metrics import Metrics
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore, batches, cache


async def _store(path: Path) -> SqliteStore:
    return await SqliteStore.open(path, StoreSettings(sync=SyncMode.FULL))


async def _three_for_bob(path: Path) -> SqliteStore:
    """A store where ana sent bob three messages, undelivered."""
    store = await _store(path)
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(3):
        await store.add_message("ana", "bob", f"m{n}", now=1.0, max_stored=9, max_stored_bytes=1_000_000)
    return store


async def test_the_account_cache_starting_again_mid_batch_loses_no_counter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "MAX_CACHED_ACCOUNTS", 2)  # cleared at every third user
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
    await asyncio.wait_for(store.forget([receipt]), 10 * batches.LAZY_S + 1)
    assert await store.pending("ana", 0, 10) == []
    await store.close()


async def test_a_read_before_its_batchs_first_write_does_not_wait_for_the_commit(tmp_path: Path) -> None:
    store = await _three_for_bob(tmp_path)
    # One batch: a read, then a write. The read saw only committed rows: it is answered when it
    # has run, while the write waits for the fsync on the committer thread.
    read = asyncio.ensure_future(store.pending("bob", 0, 10))
    write = asyncio.ensure_future(store.mark_delivered("bob", [1], now=2.0))
    await asyncio.wait([read, write], return_when=asyncio.FIRST_COMPLETED)
    assert read.done()
    assert not write.done()
    assert [i.message_id for i in read.result()] == [1, 2, 3]
    await write
    # A read after a write of its batch sees that write, and so waits for its commit. (The write's
    # task queues its job when it first runs; a read's job is queued when it is called.)
    write = asyncio.ensure_future(store.mark_delivered("bob", [2], now=2.0))
    await asyncio.sleep(0)
    read = asyncio.ensure_future(store.pending("bob", 0, 10))
    done, _ = await asyncio.wait([read, write], return_when=asyncio.FIRST_COMPLETED)
    assert write in done
    assert [i.message_id for i in read.result()] == [3]
    await store.close()


async def test_acks_in_runs_and_scattered_free_the_same_room(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob", "cy"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(40):
        sender = "ana" if n % 3 else "cy"
        await store.add_message(sender, "bob", "x" * n, now=1.0, max_stored=40, max_stored_bytes=780)
    # Full: 40 messages, 780 bytes. A run (1-20) and scattered ids (every other one above 20).
    await store.mark_delivered("bob", list(range(1, 21)), now=2.0)
    await store.mark_delivered("bob", list(range(21, 41, 2)), now=2.0)
    assert [i.message_id for i in await store.pending("bob", 0, 100)] == list(range(22, 41, 2))
    account = await store._submit(lambda conn: store._cache.account(conn, "bob"))
    assert account is not None
    left = [n - 1 for n in range(22, 41, 2)]  # message n has n - 1 bytes of text
    assert (account.stored_messages, account.stored_bytes) == (len(left), sum(left))
    # And the database agrees once the store is opened again.
    await store.close()
    store = await _store(tmp_path)
    account = await store._submit(lambda conn: store._cache.account(conn, "bob"))
    assert account is not None
    assert (account.stored_messages, account.stored_bytes) == (len(left), sum(left))
    await store.close()


async def test_a_receipt_nobody_is_offered_is_stored_and_read_back_whole(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for alias in ("ana", "bob", "cy"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(1, 7):
        sender = "ana" if n % 2 else "cy"
        await store.add_message(
            sender, "bob", f"m{n}", now=1.0, max_stored=9, max_stored_bytes=1_000_000, key=f"k{n}"
        )
    # ana is offered nothing (not connected here), cy is: only cy's receipt comes back.
    receipts = await store.mark_delivered("bob", [1, 2, 3, 4, 5, 6], now=2.0, offer_to=lambda s: s == "cy")
    assert [(r.owner, [m for m, _ in r.receipts]) for r in receipts] == [("cy", [2, 4, 6])]
    # ana's range is stored all the same, with its keys, for her next connection.
    [waiting] = await store.pending("ana", 0, 10)
    assert waiting.receipts == ((1, "k1"), (3, "k3"), (5, "k5"))
    await store.close()


@pytest.mark.parametrize("sync", [SyncMode.FULL, SyncMode.NORMAL])
async def test_commits_handed_over_without_waiting_for_the_thread_all_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: SyncMode
) -> None:
    # The loop never waits for the committer thread to take its work: the lock the two share is
    # then released after the loop stopped waiting, every time, and checkpoints (every third
    # commit with --sync normal) go the same way.
    monkeypatch.setattr(batches, "HAND_OVER_S", 0.0)
    monkeypatch.setattr(batches, "CHECKPOINT_EVERY", 3)
    store = await SqliteStore.open(tmp_path, StoreSettings(sync=sync))
    aliases = [f"u{n}" for n in range(60)]
    for start in range(0, len(aliases), 6):  # a batch of six at a time, one commit each
        await asyncio.gather(*(store.register(User(a, a, "01/02/2000")) for a in aliases[start : start + 6]))
    for alias in aliases[:5]:
        await store.register(User(alias + "x", alias, "01/02/2000"))  # one commit each
    for alias in [*aliases, *(a + "x" for a in aliases[:5])]:
        assert await store.user(alias) is not None
    await store.close()


async def test_a_batch_holds_at_most_max_batch_messages_however_they_were_sent(tmp_path: Path) -> None:
    # Runs of sends count as the messages they hold: one transaction stays short when many wait.
    store = await SqliteStore.open(tmp_path, StoreSettings(sync=SyncMode.FULL, max_batch=4))
    metrics = store.engine.metrics = Metrics()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias, "01/02/2000"))
    batches_before = metrics.batch_size.count
    runs = [
        [("bob", f"m{n}-{i}", f"k{n}-{i}") for i in range(size)] for n, size in enumerate((3, 3, 1, 6, 1))
    ]
    limits = {"max_stored": 100, "max_stored_bytes": 10**6}
    results = await asyncio.gather(*(store.add_messages("ana", run, now=1.0, **limits) for run in runs))
    assert all(isinstance(r, tuple) and r[1] for run in results for r in run)
    # [3] [3, 1] [6] [1]: a run joins a batch only if it fits; a run larger than max_batch goes alone.
    assert metrics.batch_size.count - batches_before == 4
    assert [i.message_id for i in await store.pending("bob", 0, 100)] == list(range(1, 15))
    await store.close()


async def _helper_ready(store: SqliteStore) -> None:
    """Until the WAL fsync helper answers (before, the loop syncs each commit itself, at once)."""
    walsync = store.engine._walsync
    assert walsync is not None
    async with asyncio.timeout(30):
        while not walsync.ready:
            await asyncio.sleep(0.01)


async def test_a_courier_read_ahead_is_answered_before_the_writes_queued_before_it(tmp_path: Path) -> None:
    store = await _three_for_bob(tmp_path)
    await _helper_ready(store)
    # An ack, then a courier's next page: the page goes first in the batch, so it is answered
    # without waiting for the ack's commit, and without seeing the ack (it does not need to).
    write = asyncio.ensure_future(store.mark_delivered("bob", [1], now=2.0))
    await asyncio.sleep(0)  # the ack's job is queued
    read = asyncio.ensure_future(store.pending("bob", 1, 10, ahead=True))
    done, _ = await asyncio.wait([read, write], return_when=asyncio.FIRST_COMPLETED)
    assert done == {read}
    assert [i.message_id for i in read.result()] == [2, 3]
    await write  # not ahead, the same read would have waited for it (the test above)
    await store.close()


async def test_a_resend_in_a_batch_runs_it_again_carefully_and_harms_nothing(tmp_path: Path) -> None:
    store = await _three_for_bob(tmp_path)
    limits = {"max_stored": 9, "max_stored_bytes": 1_000_000}
    first, _ = await store.add_message("ana", "bob", "keyed", now=1.0, key="k0", **limits)
    # One batch: a read (answered before the first write), a write of another kind, sends of which
    # one resends a stored key. Its row breaks the unique key index; the batch is rolled back and
    # run again, looking keys up, and each request is answered once, as if nothing had happened.
    read = store.pending("bob", 0, 10)
    registered = store.register(User("cy", "Cy", "01/02/2000"))
    run = store.add_messages("ana", [("bob", "new", "k1"), ("bob", "again", "k0")], now=2.0, **limits)
    single = store.add_message("ana", "bob", "again, alone", now=2.0, key="k0", **limits)
    await registered
    assert [i.message_id for i in await read] == [1, 2, 3, 4]
    results = await run
    assert [(r[0].message_id, r[1]) for r in results if isinstance(r, tuple)] == [(5, True), (4, False)]
    assert (await single)[0].message_id == first.message_id == 4
    assert [i.text for i in await store.pending("bob", 0, 10)] == ["m0", "m1", "m2", "keyed", "new"]
    assert not store._cache.careful  # the next batches guess again
    await store.close()


async def test_an_ack_and_a_page_cost_the_same_however_much_came_out_of_order(tmp_path: Path) -> None:
    """A message left unacked holds the delivered mark (schema 8) below every message acked after
    it; neither an ack nor a courier's next page may walk all of those again. Counted in SQLite
    VM steps, not in time."""
    store = await _store(tmp_path)
    for alias in ("x", "y", "r"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    limits = {"max_stored": 10_000, "max_stored_bytes": 10**9}
    await store.add_message("x", "r", "never acked", now=1.0, max_stored=10_000, max_stored_bytes=10**9)
    stored = await store.add_messages("y", [("r", f"m{n}", f"k{n}") for n in range(600)], now=2.0, **limits)
    seqs = [result[0].seq for result in stored if isinstance(result, tuple)]
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    async with store.turn() as conn:
        conn.set_progress_handler(count, 10)

    async def ack_and_page(n: int) -> int:
        """y's n-th message (r's id n + 2) acked alone, then the page after it."""
        nonlocal steps
        steps = 0
        [receipt] = await store.mark_delivered("r", [n + 2], now=3.0, offer_to=lambda _: True)
        assert [mid for mid, _ in receipt.receipts] == [n + 2]
        page = await store.pending("r", seqs[n], 10)
        assert [i.message_id for i in page] == list(range(n + 3, min(n + 13, 602)))
        return steps

    costs = [await ack_and_page(n) for n in range(590)]
    assert max(costs[-10:]) < 2 * max(costs[10:20])
    await store.close()
