"""The PostgreSQL store: several dmds nodes on one database."""

from dmds.stores.postgresql.cluster import PostgresCluster
from dmds.stores.postgresql.store import PostgresStore

__all__ = ["PostgresCluster", "PostgresStore"]
