"""A real PostgreSQL for the tests: one throw-away server per test run, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from dmds.cluster.postgres import LocalPostgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """Started on first use (tests that need no PostgreSQL never pay for it)."""
    server = LocalPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: LocalPostgres) -> Iterator[str]:
    """The URL of a new empty database, dropped after the test."""
    name = f"dmds_test_{next(_names)}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


@pytest.fixture
def crashable_postgres() -> Iterator[LocalPostgres]:
    """A server of the test's own, for tests that kill it: killing the shared one would fail other
    tests' databases."""
    server = LocalPostgres().start()
    yield server
    server.stop()
