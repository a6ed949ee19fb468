"""The SQLite store's WAL fsync helper (walsync.py): a real helper process, real signals, a real file."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from dmds.core.model import User
from dmds.errors import StoreError
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.sqlite import SqliteStore
from dmds.stores.sqlite.walsync import WalSync


async def _until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(30):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within 30 s: {what}")


async def _ready_store(path: Path) -> tuple[SqliteStore, WalSync]:
    store = await SqliteStore.open(path, StoreSettings(sync=SyncMode.FULL))
    walsync = store.engine._walsync
    assert walsync is not None
    await _until(lambda: walsync.ready, "the helper is ready")
    return store, walsync


def _helper_pid(walsync: WalSync) -> int:
    return walsync._procs[-1].pid


async def test_a_write_is_answered_only_once_the_helper_has_synced_it(tmp_path: Path) -> None:
    store, walsync = await _ready_store(tmp_path)
    pid = _helper_pid(walsync)
    os.kill(pid, signal.SIGSTOP)
    try:
        write = asyncio.ensure_future(store.register(User("ana", "Ana", "01/02/2000")))
        await asyncio.sleep(0.5)
        assert not write.done()  # committed in the WAL, not yet synced: not answered
        read = asyncio.ensure_future(store.user("ana"))
        await asyncio.sleep(0.2)
        assert not read.done()  # the next batch waits for the sync: no read sees an unsynced row
    finally:
        os.kill(pid, signal.SIGCONT)
    await write
    assert (await read) is not None
    await store.close()


async def test_the_helper_killed_loses_nothing_and_another_takes_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, walsync = await _ready_store(tmp_path)
    first = _helper_pid(walsync)
    os.kill(first, signal.SIGSTOP)
    write = asyncio.ensure_future(store.register(User("ana", "Ana", "01/02/2000")))
    await asyncio.sleep(0.2)
    assert not write.done()
    with caplog.at_level(logging.WARNING, logger="dmds.stores.sqlite.walsync"):
        os.kill(first, signal.SIGKILL)
        await write  # synced by the loop itself when the helper's socket closed
    assert "exited" in caplog.text
    await _until(lambda: walsync.ready, "a new helper is ready")
    assert _helper_pid(walsync) != first
    await store.register(User("bob", "Bob", "01/02/2000"))
    await store.close()
    reopened = await SqliteStore.open(tmp_path, StoreSettings(sync=SyncMode.FULL))
    assert await reopened.user("ana") is not None
    assert await reopened.user("bob") is not None
    await reopened.close()


async def test_a_failed_fdatasync_fails_its_requests_and_the_store_after_them(tmp_path: Path) -> None:
    store, walsync = await _ready_store(tmp_path)
    # The helper opens the WAL by its path for each sync: without the file there, its fdatasync
    # fails, as a disk error would make it.
    wal = Path(walsync._path)
    wal.rename(wal.with_name("elsewhere"))
    with pytest.raises(StoreError, match="fsync failed"):
        await store.register(User("ana", "Ana", "01/02/2000"))
    wal.with_name("elsewhere").rename(wal)
    with pytest.raises(StoreError, match="fsync failed"):
        await store.register(User("bob", "Bob", "01/02/2000"))  # nothing is trusted any more
    await store.close()


async def test_the_answers_settle_the_oldest_commits_first(tmp_path: Path) -> None:
    wal = tmp_path / "x-wal"
    settled: list[tuple[int, bool]] = []
    walsync = WalSync(str(wal), asyncio.get_running_loop(), lambda n, ok: settled.append((n, ok)))
    assert walsync.request() is True  # not ready yet: synced here, at once
    await _until(lambda: walsync.ready, "the helper is ready")
    assert [walsync.request() for _ in range(5)] == [None] * 5
    await _until(lambda: sum(n for n, _ in settled) == 5, "five answers")
    assert all(ok for _, ok in settled)
    await walsync.close()
