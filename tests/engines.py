"""Every store engine behind one fixture, so that the store and core suites run against each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dmds.core.ports import Store
from dmds.settings import StoreSettings, SyncMode
from dmds.stores.postgresql import PostgresStore
from dmds.stores.sqlite import SqliteStore

#: Opens the test's store (again, after a close: the same directory or database).
Opener = Callable[..., Awaitable[Store]]
ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if engine == "sqlite":

        def sqlite(settings: StoreSettings | None = None) -> Awaitable[Store]:
            return SqliteStore.open(tmp_path / "store", settings or StoreSettings(sync=SyncMode.NORMAL))

        return sqlite
    url: str = request.getfixturevalue("pg_url")

    async def postgresql(settings: StoreSettings | None = None) -> Store:
        return await PostgresStore.open(url, settings or StoreSettings(), "test-node")

    return postgresql
