"""The embedded SQLite store (the default)."""

from dmds.stores.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
