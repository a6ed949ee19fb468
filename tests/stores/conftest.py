"""Every test here runs once per store engine."""

from tests.engines import engine, open_store  # noqa: F401
