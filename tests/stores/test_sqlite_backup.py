"""Backups of the SQLite store, in process: a live copy under load, failures, and restore's checks.

The copies are read back with plain sqlite3 connections: a backup must be a whole database on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dmds.core.model import User
from dmds.errors import StoreError
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore
from dmds.stores.sqlite.backup import BackupError
from dmds.stores.sqlite.offline import StoreInUse, backup_stopped, restore

DATA = Path(__file__).parent / "data"
BIG = 10**9


async def _store(path: Path, step_pages: int = 8, sync: SyncMode = SyncMode.FULL) -> SqliteStore:
    return await SqliteStore.open(path, StoreSettings(sync=sync, backup_step_pages=step_pages))


async def _fill(store: SqliteStore, count: int, text: str = "x" * 300) -> None:
    for alias in ("ana", "bob"):
        await store.register(User(alias, alias.title(), "01/02/2000"))
    for start in range(0, count, 500):
        await asyncio.gather(
            *[
                store.add_message("ana", "bob", f"{text}{n}", now=1.0, max_stored=BIG, max_stored_bytes=BIG)
                for n in range(start, min(count, start + 500))
            ]
        )


def _when(event: asyncio.Event, test: Callable[[int, int], bool]) -> Callable[[int, int], None]:
    """A progress callback that sets `event` once test(remaining, total) holds."""

    def progress(remaining: int, total: int) -> None:
        if test(remaining, total):
            event.set()

    return progress


def _messages(path: Path, backup: bool = True) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if backup:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file, no -wal
        return dict(conn.execute("SELECT message_id, text FROM messages WHERE recipient_alias = 'bob'"))
    finally:
        conn.close()


@pytest.mark.parametrize("sync", [SyncMode.FULL, SyncMode.NORMAL])
async def test_a_backup_under_load_holds_every_message_acknowledged_before_it(
    tmp_path: Path, sync: SyncMode
) -> None:
    store = await _store(tmp_path / "data", step_pages=16, sync=sync)
    await _fill(store, 3000)
    acked: dict[int, str] = {}
    stop = asyncio.Event()

    async def send(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            text = f"live {worker}-{n}"
            item, _ = await store.add_message(
                "ana", "bob", text, now=2.0, max_stored=BIG, max_stored_bytes=BIG
            )
            acked[item.message_id] = text

    senders = [asyncio.create_task(send(w)) for w in range(8)]
    await asyncio.sleep(0.2)
    before = dict(acked)
    steps: list[tuple[int, int]] = []
    report = await store.backup(tmp_path / "copy.sqlite3", progress=lambda r, t: steps.append((r, t)))
    during = dict(acked)
    stop.set()
    await asyncio.gather(*senders)
    await store.close()

    copied = _messages(tmp_path / "copy.sqlite3")
    assert len(before) > 100
    assert before.items() <= copied.items()  # every message acknowledged before, with its text
    assert sorted(copied) == list(range(1, len(copied) + 1))  # a commit boundary: no gap, nothing torn
    assert all(text == during[mid] for mid, text in copied.items() if mid > 3000)  # only what was sent
    assert report.steps > 10, "the copy went in one step: nothing was interleaved"
    assert len(steps) == report.steps
    assert steps[-1][0] == 0
    assert report.messages == len(copied)
    assert os.stat(tmp_path / "copy.sqlite3").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["copy.sqlite3", "data"]  # no temporary file left


async def test_the_copy_holds_the_commits_still_only_in_the_wal(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data")
    await _fill(store, 2000)
    async with store.turn() as conn:  # outside any transaction
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for n in range(10):
        await store.add_message(
            "ana", "bob", f"in the wal {n}", now=2.0, max_stored=BIG, max_stored_bytes=BIG
        )
    # The database file alone (what a copy of the file would give) does not have them yet.
    shutil.copy(tmp_path / "data" / "dmds.sqlite3", tmp_path / "file-only.sqlite3")
    assert len(_messages(tmp_path / "file-only.sqlite3", backup=False)) == 2000
    await store.backup(tmp_path / "copy.sqlite3")
    await store.close()
    assert len(_messages(tmp_path / "copy.sqlite3")) == 2010


async def test_a_batch_rolled_back_during_a_backup_is_not_in_the_copy(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data", step_pages=4)
    await _fill(store, 2000)

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE messages SET text = 'rolled back' WHERE message_id <= 1500")
        raise RuntimeError("a bug in a job")  # the whole batch is rolled back

    failures: list[asyncio.Future[None]] = []
    copied_pages: list[int] = []

    def progress(remaining: int, total: int) -> None:
        copied_pages.append(total - remaining)
        if len(copied_pages) in (3, 20, 60):  # early, midway, late: the copy starts again each time
            failures.append(store._submit(failing))

    report = await store.backup(tmp_path / "copy.sqlite3", progress=progress)
    for failure in failures:
        with pytest.raises(StoreError):
            await failure
    await store.close()
    copied = _messages(tmp_path / "copy.sqlite3")
    assert len(copied) == 2000
    assert "rolled back" not in copied.values()
    assert report.restarts == 3
    assert sum(b < a for a, b in itertools.pairwise(copied_pages)) == 3  # it did start again


async def test_a_backup_that_keeps_starting_again_gives_up(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data", step_pages=4)
    await _fill(store, 2000)

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE messages SET text = 'rolled back' WHERE message_id <= 1500")
        raise RuntimeError("a failing disk")

    async def fail_always() -> None:
        while True:
            with pytest.raises(StoreError):
                await store._submit(failing)

    failer = asyncio.create_task(fail_always())
    with pytest.raises(BackupError, match="started again"):
        await store.backup(tmp_path / "copy.sqlite3")
    failer.cancel()
    await store.close()
    assert sorted(os.listdir(tmp_path)) == ["data"]


async def test_a_backup_refuses_to_overwrite_and_names_a_file_in_a_directory(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data")
    await _fill(store, 10)
    dest = tmp_path / "copy.sqlite3"
    dest.write_text("precious")
    with pytest.raises(BackupError, match="exists"):
        await store.backup(dest)
    assert dest.read_text() == "precious"
    await store.backup(dest, force=True)
    assert len(_messages(dest)) == 10
    (tmp_path / "backups").mkdir()
    report = await store.backup(tmp_path / "backups")
    assert Path(report.path).parent == tmp_path / "backups"
    assert Path(report.path).name.startswith("dmds-")
    assert len(_messages(Path(report.path))) == 10
    with pytest.raises(BackupError, match="not a directory"):
        await store.backup(tmp_path / "missing" / "copy.sqlite3")
    with pytest.raises(BackupError, match="live database"):
        await store.backup(tmp_path / "data" / "dmds.sqlite3", force=True)
    assert sorted(os.listdir(tmp_path / "backups")) == [Path(report.path).name]
    await store.close()


async def test_a_backup_cancelled_after_its_copy_leaves_nothing(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data")
    await _fill(store, 3000)
    copied = asyncio.Event()
    task = asyncio.create_task(
        store.backup(tmp_path / "copy.sqlite3", progress=_when(copied, lambda r, t: r == 0))
    )
    await copied.wait()  # the worker is checking the copy now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(os.listdir(tmp_path)) == ["data"]
    await store.close()


async def test_a_cancelled_backup_leaves_nothing_and_the_store_serves_on(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data", step_pages=1)
    await _fill(store, 3000)
    midway = asyncio.Event()
    task = asyncio.create_task(
        store.backup(tmp_path / "copy.sqlite3", progress=_when(midway, lambda r, t: r < t / 2))
    )
    await midway.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(os.listdir(tmp_path)) == ["data"]
    item, _ = await store.add_message("ana", "bob", "after", now=3.0, max_stored=BIG, max_stored_bytes=BIG)
    assert item.message_id == 3001
    report = await store.backup(tmp_path / "copy.sqlite3")  # and a new one works
    assert report.messages == 3001
    await store.close()


async def test_closing_the_store_stops_a_running_backup(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data", step_pages=1)
    await _fill(store, 3000)
    midway = asyncio.Event()
    task = asyncio.create_task(
        store.backup(tmp_path / "copy.sqlite3", progress=_when(midway, lambda r, t: r < t / 2))
    )
    await midway.wait()
    async with asyncio.timeout(10):
        await store.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(os.listdir(tmp_path)) == ["data"]
    again = await _store(tmp_path / "data")  # closed cleanly: the lock is free
    await again.close()


async def test_one_backup_at_a_time(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data", step_pages=1)
    await _fill(store, 2000)
    started = asyncio.Event()
    first = asyncio.create_task(store.backup(tmp_path / "one.sqlite3", progress=lambda r, t: started.set()))
    await started.wait()
    with pytest.raises(StoreError, match="already running"):
        await store.backup(tmp_path / "two.sqlite3")
    await first
    await store.close()


async def test_backup_of_a_stopped_store_and_restore_keep_the_previous_database(tmp_path: Path) -> None:
    store = await _store(tmp_path / "data")
    await _fill(store, 50)
    with pytest.raises(StoreInUse):  # the server's lock: another connection cannot even read
        backup_stopped(tmp_path / "data", tmp_path / "copy.sqlite3", force=False, step_pages=8)
    with pytest.raises(StoreInUse):
        restore(DATA / "schema3" / "dmds.sqlite3", tmp_path / "data")
    await store.close()

    report = backup_stopped(tmp_path / "data", tmp_path / "copy.sqlite3", force=False, step_pages=8)
    assert report.messages == 50
    assert len(_messages(tmp_path / "copy.sqlite3")) == 50

    store = await _store(tmp_path / "data")  # more messages after the backup
    await store.add_message("ana", "bob", "after", now=3.0, max_stored=BIG, max_stored_bytes=BIG)
    await store.close()
    restored = restore(tmp_path / "copy.sqlite3", tmp_path / "data")
    assert restored.kept is not None
    assert len(_messages(restored.kept, backup=False)) == 51  # kept aside, whole
    again = restore(tmp_path / "copy.sqlite3", tmp_path / "data")  # twice in one second
    assert again.kept is not None
    assert again.kept != restored.kept
    assert restored.kept.exists()
    store = await _store(tmp_path / "data")
    assert [i.message_id for i in await store.pending("bob", 0, 100)] == list(range(1, 51))
    await store.close()


async def test_a_stopped_store_left_by_a_crash_is_backed_up_with_its_wal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "schema3" / "dmds.sqlite3", data / "dmds.sqlite3")
    store = await _store(data)  # migrates, in WAL mode
    await store.add_message("ana", "bob", "in the wal", now=3.0, max_stored=BIG, max_stored_bytes=BIG)
    # A crash: the database file and its WAL as the process left them (copied while it holds them).
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("dmds.sqlite3", "dmds.sqlite3-wal"):
        shutil.copy(data / name, crashed / name)
    await store.close()
    backup_stopped(crashed, tmp_path / "copy.sqlite3", force=False, step_pages=8)
    conn = sqlite3.connect(tmp_path / "copy.sqlite3")
    assert conn.execute("SELECT count(*) FROM messages WHERE text = 'in the wal'").fetchone() == (1,)
    conn.close()


async def test_restore_migrates_an_older_schema_at_the_next_start(tmp_path: Path) -> None:
    restored = restore(DATA / "schema3" / "dmds.sqlite3", tmp_path / "data")
    assert restored.summary.schema == 3
    assert restored.kept is None
    store = await _store(tmp_path / "data")
    assert await store.user("ana") is not None
    await store.close()


def test_restore_refuses_what_is_not_a_whole_dmds_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="not a SQLite database"):
        restore(garbage, data)
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(BackupError, match="not a dmds store"):
        restore(other, data)
    newer = tmp_path / "newer.sqlite3"
    shutil.copy(DATA / "schema3" / "dmds.sqlite3", newer)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(BackupError, match="newer than this dmds knows"):
        restore(newer, data)
    torn = tmp_path / "torn.sqlite3"
    torn.write_bytes((DATA / "schema3" / "dmds.sqlite3").read_bytes()[: 8 * 4096])
    with pytest.raises(BackupError, match=r"malformed|integrity"):
        restore(torn, data)
    live = tmp_path / "live.sqlite3"
    shutil.copy(DATA / "schema3" / "dmds.sqlite3", live)
    Path(f"{live}-wal").write_bytes(b"\0" * 100)
    with pytest.raises(BackupError, match="not a backup"):
        restore(live, data)
    with pytest.raises(BackupError, match="not a file"):
        restore(tmp_path / "missing", data)
    assert os.listdir(data) == []  # nothing was put in place, nothing left behind
