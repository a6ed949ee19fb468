"""`dmds store copy`: a SQLite store with data of every kind, moved into a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from dmds.core.model import ItemKind, User
from dmds.core.ports import Store
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.postgresql import PostgresStore
from dmds.stores.sqlite import SqliteStore

LIMITS: dict[str, Any] = {"max_stored": 100, "max_stored_bytes": 10_000_000}
DATA = bytes(range(256)) * 2000  # 512 KB: more than one chunk row on PostgreSQL


def dmds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dmds.cli.main import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def fill(store: Store) -> int:
    await store.register(User("ana", "Ana Pérez", "01/02/2000"), "argon2-hash-of-ana")
    await store.register(User("bob", "Bob", "03/04/2001"))
    await store.register(User("carl", "Carl", "05/06/1990"), "argon2-hash-of-carl")
    await store.create_session("ana", b"\x01" * 32, now=1.0, expires_at=4e9)
    upload = await store.start_upload("ana", "photo.bin", "image/png", len(DATA), now=1.0)
    await store.append_upload("ana", upload, 0, DATA[:300_000])
    await store.append_upload("ana", upload, 300_000, DATA[300_000:])
    partial = await store.start_upload("carl", "half.txt", "text/plain", 10, now=1.0)
    await store.append_upload("carl", partial, 0, b"hello")
    for n in range(1, 6):
        await store.add_message("ana", "bob", f"ana to bob {n}", now=float(n), key=f"a{n}", **LIMITS)
    await store.add_message("bob", "ana", "with a file", now=6.0, attachment=0, **LIMITS)
    await store.add_message("ana", "carl", "photo", now=7.0, key="p", attachment=upload, **LIMITS)
    # Delivered, kept; ana's receipt range pushed up to 2, so only 3 waits (`pushed` comes across).
    await store.forget(await store.mark_delivered("bob", [1, 2], now=8.0))
    await store.mark_delivered("bob", [3], now=8.5)
    await store.mark_read("bob", [1], now=9.0)
    return upload


async def snapshot(store: Store, upload: int) -> dict[str, Any]:
    return {
        "users": [await store.user(a) for a in ("ana", "bob", "carl")],
        "session": await store.session_user(b"\x01" * 32, now=2.0),
        # Item for item, seqs and receipt ranges included: both engines keep the same shape.
        "pending": {a: await store.pending(a, 0, 100) for a in ("ana", "bob", "carl")},
        "history": [await store.history("ana", p, 0, 100) for p in ("bob", "carl")],
        "file": await store.read_attachment("carl", upload, 0, len(DATA)),
        "info": await store.attachment(upload),
        "blocked": await store.blocked("", 100),
    }


async def test_copy_moves_everything_and_refuses_a_non_empty_target(tmp_path: Path, pg_url: str) -> None:
    source = await SqliteStore.open(tmp_path, StoreSettings(sync=SyncMode.FULL))
    upload = await fill(source)
    await source.block("mallory", 5.0)  # blocks name aliases, registered or not
    before = await snapshot(source, upload)
    await source.close()
    assert before["file"] == DATA
    assert before["blocked"] == [("mallory", 5.0)]
    [delivered] = [i for i in before["pending"]["ana"] if i.kind is ItemKind.DELIVERED]
    assert [m for m, _ in delivered.receipts] == [3]

    done = dmds("store", "copy", "--from", str(tmp_path), "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert "messages: 7" in done.stdout
    assert f"attachment bytes: {len(DATA) + 5:,}" in done.stdout

    target = await PostgresStore.open(pg_url, StoreSettings(), "test")
    try:
        assert await snapshot(target, upload) == before
        # Counters, ids and seqs go on from where SQLite left them.
        seqs = [i.seq for a in ("ana", "bob", "carl") for i in await target.pending(a, 0, 100)]
        item, new = await target.add_message("ana", "bob", "after the move", now=10.0, **LIMITS)
        assert (item.message_id, new) == (6, True)
        assert item.seq > max(seqs)
        again, new = await target.add_message("ana", "bob", "resent", now=11.0, key="a2", **LIMITS)
        assert (again.message_id, new) == (2, False)  # idempotent keys came along
        upload2 = await target.start_upload("bob", "n", "text/plain", 1, now=1.0)
        assert upload2 > upload
    finally:
        await target.close()

    refused = dmds("store", "copy", "--from", str(tmp_path), "--to", pg_url)
    assert refused.returncode == 1
    assert "not empty" in refused.stderr


async def test_copy_refuses_a_store_in_use_and_a_missing_one(tmp_path: Path, pg_url: str) -> None:
    running = await SqliteStore.open(tmp_path, StoreSettings())
    try:
        busy = dmds("store", "copy", "--from", str(tmp_path), "--to", pg_url)
    finally:
        await running.close()
    assert busy.returncode == 1
    assert "still running" in busy.stderr
    missing = dmds("store", "copy", "--from", str(tmp_path / "nowhere"), "--to", pg_url)
    assert (missing.returncode, "no SQLite store" in missing.stderr) == (1, True)
    bad = dmds("store", "copy", "--from", str(tmp_path), "--to", "mysql://x")
    assert bad.returncode == 2


def test_migrate_says_what_it_did(pg_url: str, tmp_path: Path) -> None:
    first = dmds("migrate", "--store", pg_url)
    assert first.returncode == 0, first.stderr
    applied = (
        "001_initial.sql, 002_lock_by_index.sql, 003_offer_after.sql, 004_last_seq.sql,"
        " 005_one_row_receipt_ranges.sql, 006_blocked_aliases.sql, 007_commit_marks.sql"
    )
    assert f"applied {applied}; now at version 7" in first.stdout
    second = dmds("migrate", "--store", pg_url)
    assert "up to date at version 7; nothing applied" in second.stdout
    sqlite = dmds("migrate", "--data-dir", str(tmp_path))
    applied = "001_initial.sql, 002_session.sql, 003_lean_outbox.sql, 004_one_row_per_message.sql"
    assert f"applied {applied}" in sqlite.stdout
    unreachable = dmds("migrate", "--store", "postgresql://postgres@127.0.0.1:1/none")
    assert unreachable.returncode == 1
    assert "cannot connect" in unreachable.stderr
