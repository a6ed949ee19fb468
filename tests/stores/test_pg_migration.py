"""A PostgreSQL store written by schema 4 opens with today's, and nothing it held is lost, reordered
or miscounted; nodes of earlier releases and later databases are refused.

`data/pg_schema4` was written by the schema-4 store (commit 150edf2) with `data/write_pg_store.py`:
users with and without a password, a session, an attachment, undelivered messages from several
senders with and without keys, delivered and read ones, delivery receipts waiting and one already
pushed, one acked out of order, read receipts; `facts.json` holds what each user had waiting then,
in order and with its seqs, as that store returned it, and every user's counters.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dmds.core.model import ItemKind, OutboxItem
from dmds.errors import LimitExceeded, StoreError, UnknownAttachment
from dmds.settings import StoreSettings
from dmds.stores.postgresql import PostgresStore

DATA = Path(__file__).parent / "data" / "pg_schema4"
FACTS: dict[str, Any] = json.loads((DATA / "facts.json").read_text())


def _waiting(items: list[OutboxItem]) -> list[list[Any]]:
    return [[i.seq, i.kind.name, i.message_id, i.peer, i.text, i.key, i.sent_at] for i in items]


def _each(receipts: list[OutboxItem]) -> list[tuple[str, int, str]]:
    return [(r.owner, mid, key) for r in receipts for mid, key in r.receipts]


async def _counters(url: str) -> dict[str, list[int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT alias, last_message_id, stored_messages, stored_bytes, last_seq FROM users ORDER BY alias"
        )
    finally:
        await conn.close()
    return {row["alias"]: list(row.values())[1:] for row in rows}


@pytest.fixture
async def old_url(pg_url: str) -> str:
    """A database as schema 4 left it (the dump of data/pg_schema4)."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute((DATA / "dump.sql").read_text())
        assert await conn.fetchval("SELECT max(version) FROM public.dmds_schema") == FACTS["version"] == 4
    finally:
        await conn.close()
    return pg_url


@pytest.fixture
async def store(old_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(old_url, StoreSettings(), "new-node")
    yield store
    await store.close()


async def test_what_waited_waits_in_the_same_order_with_the_same_seqs(
    store: PostgresStore, old_url: str
) -> None:
    for alias, expected in FACTS["waiting"].items():
        items = await store.pending(alias, 0, 100)
        assert _waiting(items) == expected, alias
        # A courier reads in pages after the last seq it saw: a page boundary changes nothing.
        for cut in range(len(items)):
            assert _waiting(await store.pending(alias, items[cut].seq, 100)) == expected[cut + 1 :]
            assert _waiting(await store.pending(alias, 0, cut + 1)) == expected[: cut + 1]
    # The counters came across as they were: ids, stored counts and bytes, the last seqs.
    assert await _counters(old_url) == FACTS["counters"]


async def test_the_migrated_store_goes_on_with_ranges_and_keeps_its_counts(
    store: PostgresStore, old_url: str
) -> None:
    limits: dict[str, Any] = {"max_stored_bytes": 1_000_000}
    ids, stored, size, last_seq = FACTS["counters"]["bob"]
    item, new = await store.add_message("ana", "bob", "new", now=30.0, max_stored=stored + 1, **limits)
    # The next id, a seq above every other, and the item before it is bob's last of schema 4.
    assert (new, item.message_id, item.after) == (True, ids + 1, last_seq)
    assert item.seq > max(s for w in FACTS["waiting"].values() for s, *_ in w)
    with pytest.raises(LimitExceeded):  # the stored count came across
        await store.add_message("carl", "bob", "one too many", now=31.0, max_stored=stored + 1, **limits)
    # Acks after the upgrade: each sender gets one range. ana's starts above a1 (receipted and
    # pushed by schema 4), carl's stops below late 0 (still undelivered); eve's e2, receipted by
    # schema 4 when acked above e1, comes once more with e1 (the documented duplicate).
    receipts = await store.mark_delivered("bob", [2, 3, 4], now=32.0)
    assert sorted(_each(receipts)) == [
        ("ana", 2, "k-a2"),
        ("carl", 3, ""),
        ("eve", 4, "k-e1"),
        ("eve", 5, "k-e2"),
    ]
    assert all(r.ids for r in receipts)
    # carl's range grows when the gap above it closes; late messages acked out of order wait.
    assert _each(await store.mark_delivered("bob", [8, 9], now=33.0)) == []
    assert _each(await store.mark_delivered("bob", [7], now=34.0)) == [
        ("carl", 7, ""),
        ("carl", 8, ""),
        ("carl", 9, ""),
    ]
    counters = await _counters(old_url)
    assert counters["bob"][1:3] == [stored + 1 - 6, size + len("new") - len("a2c1e1late 0late 1late 2")]
    # What waits for carl: the delivery receipt row of schema 4 (the file ana received), then the
    # range, in seq order; pushing both forgets both.
    waiting = await store.pending("carl", 0, 100)
    assert [(i.kind, [m for m, _ in i.receipts]) for i in waiting] == [
        (ItemKind.DELIVERED, [4]), (ItemKind.DELIVERED, [3, 7, 8, 9])
    ]  # fmt: skip
    assert [i.peer for i in waiting] == ["ana", "bob"]
    await store.forget(waiting)
    assert await store.pending("carl", 0, 100) == []
    # The read receipts of schema 4 are pushed and forgotten as before.
    [delivered, read] = (await store.pending("dora", 0, 100))[-2:]
    assert (delivered.kind, read.kind, read.message_id) == (ItemKind.DELIVERED, ItemKind.READ, 3)
    await store.forget([delivered, read])
    assert [i.kind for i in await store.pending("dora", 0, 100)] == [ItemKind.MESSAGE, ItemKind.MESSAGE]


async def test_history_attachments_purge_and_unregister_after_the_migration(store: PostgresStore) -> None:
    history = await store.history("ana", "bob", 0, 10)
    assert [(m.text, m.delivered_at is not None, m.read_at is not None) for m in reversed(history)] == [
        ("a1", True, False), ("a2", False, False), ("b1", True, True), ("b2", True, False),
    ]  # fmt: skip
    upload = FACTS["attachment"]
    for reader in ("ana", "carl"):  # its recipient and its owner
        assert await store.read_attachment(reader, upload, 0, 5) == b"hello"
    with pytest.raises(UnknownAttachment):
        await store.read_attachment("bob", upload, 0, 5)
    # Purge keeps what a receipt still points at: of bob's delivered messages a1 goes (its receipt
    # was pushed), e2 stays (its receipt row of schema 4 waits for eve), and so does a2 while the
    # range that covers it waits; ana's all have receipt rows waiting.
    await store.mark_delivered("bob", [2], now=40.0)
    assert await store.purge(delivered_before=1e9) == 1
    assert [m.text for m in await store.history("ana", "bob", 0, 10)] == ["b2", "b1", "a2"]
    await store.forget(await store.pending("ana", 0, 100))
    assert await store.purge(delivered_before=1e9) == 1
    assert [m.text for m in await store.history("ana", "bob", 0, 10)] == ["b2", "b1"]
    # Unregistering eve takes her receipts and her mailbox; what she sent stays with bob.
    await store.unregister("eve")
    assert [i.peer for i in await store.pending("bob", 0, 100) if i.kind is ItemKind.MESSAGE].count(
        "eve"
    ) == 2


async def test_nodes_of_earlier_releases_fail_instead_of_miscounting(
    store: PostgresStore, old_url: str
) -> None:
    conn = await asyncpg.connect(old_url)
    try:
        for call in (
            "SELECT * FROM dmds_add_messages_v3($1, $1, $1, $1, $2, $3, $2, $2)",
            "SELECT * FROM dmds_add_messages($1, $1, $1, $1, $2, $3, $2, $2)",
        ):
            with pytest.raises(asyncpg.RaiseError, match="earlier release"):
                await conn.fetch(call, ["ana"], [0], [1.0])
        for name in ("dmds_settle_v3", "dmds_settle"):
            with pytest.raises(asyncpg.RaiseError, match="earlier release"):
                await conn.fetch(f"SELECT * FROM {name}('bob', ARRAY[2]::bigint[], 1.0, 2::smallint)")
        # A database migrated by a later release is refused at start, before anything is read.
        await conn.execute("INSERT INTO dmds_schema (version, name) VALUES (99, '099_future.sql')")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="schema 99, newer than this release"):
        await PostgresStore.open(old_url, StoreSettings(), "old-node")
