"""Stores: one implementation of `dmds.core.ports.Store` per engine. The only place with SQL."""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING

from dmds.core.ports import Cluster, Store
from dmds.settings import ServeSettings

if TYPE_CHECKING:
    from dmds.metrics import Metrics


def node_id(settings: ServeSettings) -> str:
    """The configured node id, or one unique to this process."""
    return settings.cluster.node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def describe(settings: ServeSettings) -> str:
    if settings.server.store:
        from dmds.stores.postgresql.engine import redact

        return redact(settings.server.store)
    from dmds.stores.sqlite.connection import DB_NAME

    return str(settings.server.data_dir / DB_NAME)


async def open_store(settings: ServeSettings, metrics: Metrics | None = None) -> tuple[Store, Cluster | None]:
    """The store `settings` name (SQLite in data_dir by default), with its cluster if it has one,
    counting its batches into `metrics`. The engines are imported only when chosen."""
    if settings.server.store:
        from dmds.stores.postgresql import PostgresCluster, PostgresStore

        store = await PostgresStore.open(settings.server.store, settings.store, node_id(settings))
        store.engine.metrics = metrics
        if metrics is not None:
            metrics.postgres = True
        return store, PostgresCluster(store.engine, settings.cluster.lease_s)
    from dmds.stores.sqlite import SqliteStore

    sqlite = await SqliteStore.open(settings.server.data_dir, settings.store)
    sqlite.engine.metrics = metrics
    return sqlite, None
