"""The store contract, on every engine (SQLite in tmp_path, a real PostgreSQL): what the core relies on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dmds.core.model import ItemKind, OutboxItem, User
from dmds.errors import (
    AliasTaken,
    Blocked,
    InvalidField,
    LimitExceeded,
    StoreError,
    UnknownAttachment,
    UnknownUser,
)
from dmds.settings import StoreSettings, SyncMode
from tests.engines import Opener

LIMITS: dict[str, Any] = {"max_stored": 100, "max_stored_bytes": 1_000_000}


def _each(receipts: list[OutboxItem]) -> list[tuple[str, ItemKind, int, str, str]]:
    """One entry per message receipted, whether the store keeps receipts as ranges or not."""
    return [(r.owner, r.kind, mid, r.peer, key) for r in receipts for mid, key in r.receipts]


async def test_no_outbox_seq_is_handed_out_twice_after_its_item_was_deleted(open_store: Opener) -> None:
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.add_message("ana", "bob", "m1", now=1.0, max_stored=3, max_stored_bytes=1_000_000)
    [receipt] = await store.mark_delivered("bob", [1], now=2.0)
    await store.close()

    # A new process: the receipt is pushed and forgotten (the highest seq in the table goes) before
    # anything new is stored. A courier that pushed that seq skips any item that reuses it.
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    await store.forget([receipt])
    item, new = await store.add_message("ana", "bob", "m2", now=3.0, max_stored=3, max_stored_bytes=1_000_000)
    assert new
    assert item.seq > receipt.seq
    await store.close()


async def test_refused_messages_change_nothing_and_counters_survive_a_restart(open_store: Opener) -> None:
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
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

    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    # The cached counters were written with the batch: the limit still holds, the ids go on.
    receipts = await store.mark_delivered("bob", [1, 2, 3, 99], now=5.0)
    assert _each(receipts)[-1][:3] == ("ana", ItemKind.DELIVERED, 3)
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


async def test_a_failed_batch_acknowledges_nothing_and_leaves_no_trace(open_store: Opener) -> None:
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
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


async def test_accounts_sessions_and_unregister(open_store: Opener) -> None:
    store = await open_store()
    await store.register(User("ana", "Ana", "01/02/2000"), "hash-a")
    await store.register(User("bob", "Bob", "01/02/2000"))
    with pytest.raises(AliasTaken):
        await store.register(User("ana", "Other", "01/02/2000"))
    record = await store.user("ana")
    assert record is not None
    assert (record.password_hash, record.protected) == ("hash-a", True)
    assert (await store.user("bob")) is not None
    assert await store.user("nobody") is None
    await store.set_password("ana", "hash-b")
    assert (await store.user("ana")).password_hash == "hash-b"  # type: ignore[union-attr]
    with pytest.raises(UnknownUser):
        await store.set_password("nobody", "x")
    await store.create_session("ana", b"t1", now=1.0, expires_at=100.0)
    await store.create_session("ana", b"t2", now=1.0, expires_at=100.0)
    with pytest.raises(UnknownUser):
        await store.create_session("nobody", b"t3", now=1.0, expires_at=100.0)
    assert await store.session_user(b"t1", now=50.0) == ("ana", 100.0)
    assert await store.session_user(b"t1", now=150.0) is None  # expired
    await store.revoke_sessions("ana", b"t1")
    assert await store.session_user(b"t1", now=50.0) is None
    assert await store.session_user(b"t2", now=50.0) == ("ana", 100.0)
    await store.revoke_sessions("ana")
    assert await store.session_user(b"t2", now=50.0) is None
    # Unregistering takes the user's mailbox and sessions; what they sent stays with its recipient.
    await store.add_message("ana", "bob", "to bob", now=1.0, **LIMITS)
    await store.add_message("bob", "ana", "to ana", now=2.0, **LIMITS)
    await store.create_session("ana", b"t4", now=1.0, expires_at=100.0)
    await store.unregister("ana")
    with pytest.raises(UnknownUser):
        await store.unregister("ana")
    assert await store.session_user(b"t4", now=50.0) is None
    assert [i.text for i in await store.pending("bob", 0, 10)] == ["to bob"]
    assert await store.pending("ana", 0, 10) == []
    # A new "ana" starts with an empty mailbox, ids from 1, and none of the old one's history.
    await store.register(User("ana", "New Ana", "01/02/2000"))
    item, _ = await store.add_message("bob", "ana", "hello again", now=3.0, **LIMITS)
    assert item.message_id == 1
    assert [m.text for m in await store.history("ana", "bob", 0, 10)] == ["hello again"]
    await store.close()


async def test_receipts_read_marks_and_history(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n in range(1, 6):
        await store.add_message("ana", "bob", f"m{n}", now=float(n), key=f"k{n}", **LIMITS)
    receipts = await store.mark_delivered("bob", [1, 2, 99], now=10.0)
    assert _each(receipts) == [
        ("ana", ItemKind.DELIVERED, 1, "bob", "k1"),
        ("ana", ItemKind.DELIVERED, 2, "bob", "k2"),
    ]
    assert await store.mark_delivered("bob", [1], now=11.0) == []  # a repeated Ack changes nothing
    read = await store.mark_read("bob", [2], now=12.0)
    assert [(r.kind, r.message_id) for r in read] == [(ItemKind.READ, 2)]
    assert await store.mark_read("bob", [2], now=13.0) == []
    pending = await store.pending("ana", 0, 10)
    assert [(kind, message_id) for _, kind, message_id, _, _ in _each(pending)] == [
        (ItemKind.DELIVERED, 1), (ItemKind.DELIVERED, 2), (ItemKind.READ, 2),
    ]  # fmt: skip
    assert [i.seq for i in pending] == sorted(i.seq for i in pending)
    await store.forget([i for i in pending if i.kind is ItemKind.DELIVERED])
    assert [i.seq for i in await store.pending("ana", 0, 10)] == [pending[-1].seq]
    # Only what is still undelivered waits for bob, after a given seq.
    waiting = await store.pending("bob", 0, 10)
    assert [i.message_id for i in waiting] == [3, 4, 5]
    assert [i.message_id for i in await store.pending("bob", waiting[0].seq, 1)] == [4]
    page = await store.history("bob", "ana", 0, 10)
    assert [(m.message_id, m.delivered_at, m.read_at) for m in page] == [
        (5, None, None), (4, None, None), (3, None, None), (2, 10.0, 12.0), (1, 10.0, None),
    ]  # fmt: skip
    assert [m.message_id for m in await store.history("ana", "bob", 3.0, 10)] == [2, 1]
    assert [m.message_id for m in await store.history("ana", "bob", 0, 2)] == [5, 4]
    # A page stops once its texts pass max_bytes (the row that passed is kept).
    assert [m.message_id for m in await store.history("ana", "bob", 0, 10, max_bytes=3)] == [5, 4]
    # Purge forgets delivered messages older than the cut, never one a receipt still points at.
    assert await store.purge(delivered_before=100.0) == 1
    assert [m.message_id for m in await store.history("ana", "bob", 0, 10)] == [5, 4, 3, 2]
    await store.close()


async def test_attachments_in_chunks(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("ana", "bob", "eve"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    data = bytes(range(256)) * 40
    upload = await store.start_upload("ana", "data.bin", "application/octet-stream", len(data), now=1.0)
    with pytest.raises(UnknownAttachment):
        await store.add_message("ana", "bob", "early", now=1.0, attachment=upload, **LIMITS)
    assert await store.attachment(upload) is None  # not complete yet
    offset = 0
    for size in (1000, 3000, 5000, 1240):
        with pytest.raises(InvalidField):
            await store.append_upload("ana", upload, offset + 1, data[offset : offset + size])
        offset = await store.append_upload("ana", upload, offset, data[offset : offset + size])
    assert offset == len(data)
    with pytest.raises(UnknownAttachment):
        await store.append_upload("ana", upload, offset, b"more")  # complete: closed
    with pytest.raises(UnknownAttachment):
        await store.append_upload("eve", upload, 0, b"x")
    info = await store.attachment(upload)
    assert info is not None
    assert (info.name, info.size) == ("data.bin", len(data))
    item, _ = await store.add_message("ana", "bob", "here", now=2.0, attachment=upload, **LIMITS)
    assert item.attachment == info
    [pushed] = await store.pending("bob", 0, 10)
    assert pushed.attachment == info
    # Reads across chunk boundaries, by the owner and the recipient, never by anyone else.
    for reader in ("ana", "bob"):
        assert await store.read_attachment(reader, upload, 900, 4200) == data[900:5100]
        assert await store.read_attachment(reader, upload, 0, len(data) + 10) == data
    with pytest.raises(UnknownAttachment):
        await store.read_attachment("eve", upload, 0, 10)
    with pytest.raises(UnknownAttachment):
        await store.add_message("eve", "bob", "not mine", now=3.0, attachment=upload, **LIMITS)
    empty = await store.start_upload("ana", "empty", "text/plain", 0, now=1.0)
    assert await store.attachment(empty) is not None  # nothing to send: complete at once
    await store.close()


async def test_unknown_users_and_limits_refuse_only_their_own_message(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    outcomes = await asyncio.gather(
        store.add_message("ana", "bob", "one", now=1.0, max_stored=2, max_stored_bytes=100),
        store.add_message("ghost", "bob", "x", now=1.0, max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "ghost", "x", now=1.0, max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "bob", "y" * 200, now=1.0, max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "bob", "two", now=1.0, max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "bob", "three", now=1.0, max_stored=2, max_stored_bytes=100),
        return_exceptions=True,
    )
    kinds = [type(o).__name__ if isinstance(o, BaseException) else o[0].message_id for o in outcomes]
    assert kinds == [1, "UnknownUser", "UnknownUser", "LimitExceeded", 2, "LimitExceeded"]
    await store.close()


async def test_receipts_acked_out_of_order_come_once_each_and_none_is_lost(open_store: Opener) -> None:
    """A store that keeps receipts as ranges holds back one above a gap until the gap closes; one
    that keeps them per message gives each at once. Either way each comes once, none is lost."""
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob", "carl"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for n, sender in enumerate(["ana", "ana", "carl", "ana", "ana", "carl"], start=1):
        await store.add_message(sender, "bob", f"m{n}", now=float(n), key=f"k{n}", **LIMITS)
    told = []
    for acked in ([1], [4], [5, 3], [2], [6]):
        told += _each(await store.mark_delivered("bob", acked, now=10.0))
    assert sorted(told) == [("ana", ItemKind.DELIVERED, n, "bob", f"k{n}") for n in (1, 2, 4, 5)] + [
        ("carl", ItemKind.DELIVERED, n, "bob", f"k{n}") for n in (3, 6)
    ]
    for sender in ("ana", "carl"):  # what waits in the store is the same, once each
        waiting = _each(await store.pending(sender, 0, 100))
        assert sorted(waiting) == sorted(t for t in told if t[0] == sender)
    await store.close()


async def test_messages_delivered_out_of_order_keep_their_times_and_free_their_places(
    open_store: Opener,
) -> None:
    """Acks above a gap, a read before its ack, an ack of ids not given yet: what waits, what each
    message's history says and what purge takes are as if every message were marked alone."""
    store = await open_store()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    limits = {"max_stored": 6, "max_stored_bytes": 1_000_000}
    for n in range(1, 7):
        await store.add_message("ana", "bob", f"m{n}", now=float(n), key=f"k{n}", **limits)

    async def waiting() -> list[int]:
        return [i.message_id for i in await store.pending("bob", 0, 20) if i.kind is ItemKind.MESSAGE]

    await store.mark_delivered("bob", [3, 4], now=10.0)  # above a gap
    await store.mark_read("bob", [6], now=11.0)  # read before it was acked: delivered too
    assert await waiting() == [1, 2, 5]
    await store.mark_delivered("bob", [1, 2], now=12.0)  # the gap closes
    assert await waiting() == [5]
    await store.mark_delivered("bob", [5, 7, 8], now=13.0)  # 7 and 8 are not given yet
    assert await waiting() == []
    await store.add_message("ana", "bob", "m7", now=14.0, key="k7", **limits)
    assert await waiting() == [7]  # the early ack did not mark it
    for n in range(8, 13):  # six places: every delivered message freed its own
        await store.add_message("ana", "bob", f"m{n}", now=float(n + 7), key=f"k{n}", **limits)
    with pytest.raises(LimitExceeded):
        await store.add_message("ana", "bob", "m13", now=20.0, key="k13", **limits)
    page = await store.history("bob", "ana", 0, 20)
    assert [(m.message_id, m.delivered_at, m.read_at) for m in page][-7:] == [
        (7, None, None), (6, 11.0, 11.0), (5, 13.0, None), (4, 10.0, None), (3, 10.0, None),
        (2, 12.0, None), (1, 12.0, None),
    ]  # fmt: skip
    # Purge takes what was delivered before the cut once its receipts are pushed.
    await store.forget(await store.pending("ana", 0, 20))
    assert await store.purge(delivered_before=12.5) == 5
    page = await store.history("bob", "ana", 0, 20)
    assert [(m.message_id, m.delivered_at) for m in page][-2:] == [(7, None), (5, 13.0)]
    await store.close()


async def test_an_ack_over_several_senders_and_unregistered_ones_frees_every_message(
    open_store: Opener,
) -> None:
    """One ack's run over messages of several senders, some unregistered since: a receipt for each
    sender still there, none for the others, and every message's place in the limit freed."""
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob", "carl", "dora"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    limits = {"max_stored": 5, "max_stored_bytes": 1_000_000}
    for n, sender in enumerate(["ana", "carl", "ana", "dora", "dora"], start=1):
        await store.add_message(sender, "bob", f"m{n}", now=float(n), key=f"k{n}", **limits)
    await store.unregister("carl")
    await store.unregister("dora")
    told = _each(await store.mark_delivered("bob", [1, 2, 3], now=10.0))  # ana's and carl's
    told += _each(await store.mark_delivered("bob", [4, 5], now=11.0))  # only dora's
    assert told == [("ana", ItemKind.DELIVERED, n, "bob", f"k{n}") for n in (1, 3)]
    for n in range(6, 11):  # all five places free again
        await store.add_message("ana", "bob", f"m{n}", now=float(n), key=f"k{n}", **limits)
    waiting = [i.message_id for i in await store.pending("bob", 0, 10) if i.kind is ItemKind.MESSAGE]
    assert waiting == [6, 7, 8, 9, 10]
    await store.close()


async def test_a_key_sent_twice_in_one_batch_stores_one_message(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    # Submitted in one loop pass: one batch (one call of the bulk insert on PostgreSQL).
    first, again, other = await asyncio.gather(
        store.add_message("ana", "bob", "hola", now=1.0, key="k", max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "bob", "hola", now=1.0, key="k", max_stored=2, max_stored_bytes=100),
        store.add_message("ana", "bob", "otra", now=1.0, key="k2", max_stored=2, max_stored_bytes=100),
    )
    assert [(item.message_id, new) for item, new in (first, again, other)] == [
        (1, True),
        (1, False),
        (2, True),
    ]
    assert [i.text for i in await store.pending("bob", 0, 10)] == ["hola", "otra"]
    with pytest.raises(LimitExceeded):  # two stored, not three
        await store.add_message("ana", "bob", "x", now=2.0, max_stored=2, max_stored_bytes=100)
    await store.close()


async def test_users_come_by_pages_with_a_literal_prefix(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("bob", "ana", "a_b", "axb", "anabel", "zed"):
        await store.register(User(alias, f"Full {alias}", "01/02/2000"), "hash" if alias == "ana" else None)
    await store.add_message("ana", "bob", "hola", now=1.0, **LIMITS)
    await store.add_message("zed", "bob", "¿qué?", now=2.0, **LIMITS)

    first = await store.users("", "", 2)
    assert [u.alias for u in first] == ["a_b", "ana"]
    rest = await store.users("", first[-1].alias, 10)
    assert [u.alias for u in rest] == ["anabel", "axb", "bob", "zed"]
    assert [u.alias for u in await store.users("an", "", 10)] == ["ana", "anabel"]
    assert [u.alias for u in await store.users("an", "ana", 10)] == ["anabel"]
    # "_" and "%" are letters here, not LIKE's wildcards
    assert [u.alias for u in await store.users("a_", "", 10)] == ["a_b"]
    assert await store.users("%", "", 10) == []

    bob = await store.user_info("bob")
    assert bob is not None
    assert (bob.full_name, bob.stored_messages, bob.stored_bytes) == (
        "Full bob",
        2,
        len("hola¿qué?".encode()),
    )
    assert (bob.protected, bob.blocked) == (False, False)
    assert bob.registered_at.startswith("20")
    ana = await store.user_info("ana")
    assert ana is not None
    assert ana.protected
    assert await store.user_info("nobody") is None
    await store.mark_delivered("bob", [1], now=3.0)
    assert (await store.user_info("bob")).stored_messages == 1  # type: ignore[union-attr]
    await store.close()


async def test_a_block_outlives_the_account_and_a_restart(open_store: Opener) -> None:
    store = await open_store()
    await store.register(User("ana", "Ana", "01/02/2000"), "hash")
    await store.create_session("ana", b"t" * 32, 1.0, 1e12)
    assert await store.block("ana", 5.0) is True
    assert await store.block("ana", 6.0) is False  # blocked already: the first time stays
    assert await store.session_user(b"t" * 32, 2.0) is None  # its tokens went
    record = await store.user("ana")
    assert record is not None
    assert record.blocked
    info = await store.user_info("ana")
    assert info is not None
    assert info.blocked
    assert await store.block("ghost", 7.0) is True  # an alias nobody has: reserved
    with pytest.raises(Blocked):
        await store.register(User("ghost", "Someone", "01/02/2000"))
    await store.unregister("ana")
    with pytest.raises(Blocked):  # deleting the account did not free the alias
        await store.register(User("ana", "Someone else", "01/02/2000"))
    await store.register(User("bob", "Bob", "01/02/2000"))
    with pytest.raises(AliasTaken):  # taken stays taken
        await store.register(User("bob", "Bob", "01/02/2000"))
    await store.close()

    store = await open_store()
    assert await store.blocked("", 10) == [("ana", 5.0), ("ghost", 7.0)]
    assert await store.blocked("gh", 10) == [("ghost", 7.0)]
    assert await store.unblock("ghost") is True
    assert await store.unblock("ghost") is False
    await store.register(User("ghost", "Someone", "01/02/2000"))
    record = await store.user("ghost")
    assert record is not None
    assert not record.blocked
    assert await store.blocked("", 10) == [("ana", 5.0)]
    await store.close()


async def test_unregister_takes_the_users_uploads_but_those_others_received(open_store: Opener) -> None:
    store = await open_store()
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    sent, kept, partial = [await store.start_upload("ana", n, "text/plain", 2, now=1.0) for n in "skp"]
    for upload in (sent, kept):
        await store.append_upload("ana", upload, 0, b"ab")
    await store.append_upload("ana", partial, 0, b"a")
    await store.add_message("ana", "bob", "a file", now=2.0, attachment=sent, **LIMITS)
    received = await store.start_upload("bob", "r", "text/plain", 1, now=1.0)
    await store.append_upload("bob", received, 0, b"r")
    await store.add_message("bob", "ana", "for you", now=3.0, attachment=received, **LIMITS)

    await store.unregister("ana")
    assert await store.read_attachment("bob", sent, 0, 10) == b"ab"  # bob's message keeps it
    assert await store.attachment(kept) is None
    assert await store.read_attachment("bob", received, 0, 10) == b"r"  # bob's own upload stays
    with pytest.raises(UnknownAttachment):
        await store.append_upload("ana", partial, 1, b"b")
    await store.close()


async def test_a_block_in_a_failed_batch_blocks_nothing(open_store: Opener) -> None:
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    await store.block("eve", 1.0)
    # In one batch: a block, an unblock, and a message that fails the batch (a lone surrogate).
    blocked = asyncio.ensure_future(store.block("mallory", 2.0))
    unblocked = asyncio.ensure_future(store.unblock("eve"))
    await asyncio.sleep(0)  # both submitted: the message joins their batch
    bad = store.add_message("ana", "bob", "\ud800", now=1.0, **LIMITS)
    outcomes = await asyncio.gather(blocked, unblocked, bad, return_exceptions=True)
    assert [type(o) for o in outcomes] == [StoreError, StoreError, StoreError]
    await store.register(User("mallory", "Mallory", "01/02/2000"))  # the block was rolled back
    with pytest.raises(Blocked):  # and so was the unblock
        await store.register(User("eve", "Eve", "01/02/2000"))
    await store.close()


async def test_messages_sent_together_are_each_stored_or_refused_as_alone(open_store: Opener) -> None:
    store = await open_store(StoreSettings(sync=SyncMode.FULL))
    for alias in ("ana", "bob", "cy"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    first, _ = await store.add_message(
        "ana", "bob", "before", now=1.0, key="k0", max_stored=3, max_stored_bytes=10**6
    )
    results = await store.add_messages(
        "ana",
        [
            ("bob", "one", "k1"),
            ("nobody", "lost", "k2"),  # refused: the others go on
            ("bob", "again", "k0"),  # a resend of a key stored before: its first message
            ("cy", "to cy", None),
            ("bob", "two", "k3"),
            ("bob", "k1 twice", "k1"),  # a key used earlier in the same run: a resend too
            ("bob", "three", "k4"),  # bob has 3 waiting now: refused
        ],
        now=2.0,
        max_stored=3,
        max_stored_bytes=10**6,
    )
    assert isinstance(results[1], UnknownUser)
    assert isinstance(results[6], LimitExceeded)
    stored = [r for r in results if isinstance(r, tuple)]
    assert [(item.owner, item.message_id, item.text, new) for item, new in stored] == [
        ("bob", 2, "one", True),
        ("bob", first.message_id, "again", False),
        ("cy", 1, "to cy", True),
        ("bob", 3, "two", True),
        ("bob", 2, "k1 twice", False),
    ]
    # What was stored is what is waiting, in order; nothing of the refused ones.
    waiting = await store.pending("bob", 0, 10)
    assert [(i.message_id, i.text) for i in waiting] == [(1, "before"), (2, "one"), (3, "two")]
    assert [i.text for i in await store.pending("cy", 0, 10)] == ["to cy"]
    await store.close()
