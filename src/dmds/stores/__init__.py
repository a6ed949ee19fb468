"""Stores: one implementation of `dmds.core.ports.Store` per engine. The only place with SQL."""
