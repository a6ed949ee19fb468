"""A store written by an earlier schema opens with today's, and nothing it held is lost or changed.

`data/schema3` was written by the schema-3 store (commit 1678a6b) with `data/write_store.py`, and
`data/schema7` by the schema-7 store (commit 418ae39): users with and without a password, a session,
an attachment, undelivered messages with and without keys, delivered and read ones, receipts waiting
and one already pushed; `waiting.json` is what each user had waiting then, in order, as that store
returned it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dmds.core.model import ItemKind
from dmds.errors import LimitExceeded
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore

DATA = Path(__file__).parent / "data"
MAX_STORED = 7


@pytest.fixture(params=["schema3", "schema7"])
def schema(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(tmp_path: Path, schema: str) -> SqliteStore:
    shutil.copytree(DATA / schema, tmp_path / "data")
    return await SqliteStore.open(tmp_path / "data", StoreSettings(sync=SyncMode.FULL))


async def test_an_older_store_keeps_what_waits_in_order(store: SqliteStore, schema: str) -> None:
    waiting = json.loads((DATA / schema / "waiting.json").read_text())
    seqs: list[int] = []
    for alias, expected in waiting.items():
        items = await store.pending(alias, 0, 100)
        got = [[i.kind.name, i.message_id, i.peer, i.text, i.key] for i in items]
        # Each kind in its order (messages by id, receipts as stored); how a user's messages and
        # receipts interleave means nothing, and the migration moves the receipts after them.
        for kind in ItemKind:
            assert [g for g in got if g[0] == kind.name] == [e for e in expected if e[0] == kind.name]
        assert len(got) == len(expected)
        seqs += [i.seq for i in items]
        # A courier reads in pages after the last seq it saw: a page boundary changes nothing.
        rest = await store.pending(alias, items[0].seq, 100) if items else []
        assert [i.seq for i in rest] == [i.seq for i in items[1:]]
    assert len(set(seqs)) == len(seqs)  # one seq, one item
    [(item, new)] = [
        await store.add_message(
            "ana", "bob", "after", now=30.0, max_stored=MAX_STORED, max_stored_bytes=1_000_000
        )
    ]
    assert (new, item.message_id) == (True, 8)
    assert item.seq > max(seqs)  # ids and seqs go on above
    await store.close()


async def test_an_older_store_settles_and_counts_what_it_held(store: SqliteStore, schema: str) -> None:
    await store.add_message(
        "ana", "bob", "third", now=30.0, max_stored=MAX_STORED, max_stored_bytes=1_000_000
    )
    with pytest.raises(LimitExceeded):  # six from before and this one: the count came across
        await store.add_message(
            "ana", "bob", "fourth", now=31.0, max_stored=MAX_STORED, max_stored_bytes=1_000_000
        )
    receipts = await store.mark_delivered("bob", list(range(2, 9)), now=32.0)
    each = sorted((mid, r.owner, r.kind, key) for r in receipts for mid, key in r.receipts)
    assert [(owner, kind, mid, key) for mid, owner, kind, key in each] == [
        ("ana", ItemKind.DELIVERED, 2, "k-a2"), ("carl", ItemKind.DELIVERED, 3, ""),
        *[("carl", ItemKind.DELIVERED, n, "") for n in range(4, 8)], ("ana", ItemKind.DELIVERED, 8, ""),
    ]  # fmt: skip
    # What is left for bob: the receipts of what he sent, as that store kept them (one by one on
    # schema 3: two DELIVERED and a READ; a range on schema 7: one DELIVERED and the READ).
    waiting = json.loads((DATA / schema / "waiting.json").read_text())["bob"]
    receipts_kept = [ItemKind[kind] for kind, *_ in waiting if kind != "MESSAGE"]
    assert receipts_kept == ([ItemKind.DELIVERED] * (2 if schema == "schema3" else 1) + [ItemKind.READ])
    assert [i.kind for i in await store.pending("bob", 0, 100)] == receipts_kept
    for n in range(7):  # room again for seven
        await store.add_message(
            "carl", "bob", f"again {n}", now=33.0, max_stored=MAX_STORED, max_stored_bytes=1_000_000
        )
    history = await store.history("ana", "bob", 0, 10)
    assert [(m.text, m.delivered_at is not None, m.read_at is not None) for m in reversed(history)] == [
        ("a1", True, False), ("a2", True, False), ("b1", True, True), ("b2", True, False),
        ("third", True, False),
    ]  # fmt: skip
    [file] = [m for m in await store.history("ana", "carl", 0, 10) if m.attachment is not None]
    assert file.attachment is not None
    assert await store.read_attachment("ana", file.attachment.attachment_id, 0, 5) == b"hello"
    assert await store.session_user(b"t" * 32, now=2.0) == ("dora", 4e9)
    user = await store.user("dora")
    assert user is not None
    assert user.password_hash == "$argon2id$fake"
    await store.close()


async def test_an_older_stores_keys_still_answer_resends(store: SqliteStore) -> None:
    limits = {"max_stored": MAX_STORED, "max_stored_bytes": 1_000_000}
    item, new = await store.add_message("ana", "bob", "a2 again", now=30.0, key="k-a2", **limits)
    assert (new, item.message_id) == (False, 2)
    [run_result] = await store.add_messages("ana", [("bob", "a2 once more", "k-a2")], now=31.0, **limits)
    assert isinstance(run_result, tuple)
    assert (run_result[1], run_result[0].message_id) == (False, 2)
    await store.close()


async def test_an_older_store_keeps_when_each_message_was_delivered(store: SqliteStore) -> None:
    async def times() -> dict[str, float | None]:
        return {m.text: m.delivered_at for m in await store.history("ana", "bob", 0, 10)}

    assert await times() == {"a1": 22.0, "a2": None, "b1": 20.0, "b2": 20.0}
    await store.mark_delivered("bob", [2, 3], now=40.0)
    assert await times() == {"a1": 22.0, "a2": 40.0, "b1": 20.0, "b2": 20.0}
    waiting = [i.message_id for i in await store.pending("bob", 0, 100) if i.kind is ItemKind.MESSAGE]
    assert waiting == [4, 5, 6, 7]
    await store.close()
