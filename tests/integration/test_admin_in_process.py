"""The admin port wired by hand in this process, on real sockets and a real SQLite store: readiness
names a listener that closed and a store that closed, and two servers in one process keep their
metrics apart (each has its own registry)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmds.admin.server import AdminServer
from dmds.core.service import Service
from dmds.metrics import Metrics
from dmds.settings import AccountSettings, ClassicLimits, DeliverySettings, SessionSettings, StoreSettings
from dmds.stores.sqlite import SqliteStore
from dmds.transports.classic_server import ClassicServer
from dmds.transports.session_server import SessionServer
from tests import wire
from tests.integration.admin_http import get_sync, parse
from tests.integration.listener import exchange

TOKEN = "a token for this test"


@dataclass
class Node:
    store: SqliteStore
    service: Service
    classic: ClassicServer
    classic_port: int
    session: SessionServer
    admin: AdminServer
    admin_port: int

    async def close(self) -> None:
        await self.admin.close()
        await self.classic.close()
        await self.session.close()
        await self.service.close()
        await self.store.close()


async def _node(data_dir: Path) -> Node:
    metrics = Metrics()
    store = await SqliteStore.open(data_dir, StoreSettings())
    store.engine.metrics = metrics
    delivery = DeliverySettings()
    accounts = AccountSettings(argon2_time_cost=1, argon2_memory_kib=64)
    service = Service(store, delivery, accounts, metrics=metrics)
    classic = ClassicServer(service, ClassicLimits(), delivery)
    classic_port = await classic.start("127.0.0.1", 0)
    session = SessionServer(service, SessionSettings(), delivery, ClassicLimits())
    await session.start("127.0.0.1", 0)
    admin = AdminServer(
        service,
        store,
        metrics,
        token=TOKEN,
        ready_timeout_s=1.0,
        classic=classic,
        session=session,
        listeners={"classic": classic, "session": session},
    )
    admin_port = await admin.start("127.0.0.1", 0)
    return Node(store, service, classic, classic_port, session, admin, admin_port)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    made = await _node(tmp_path / "a")
    yield made
    await made.close()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    answer = await asyncio.to_thread(get_sync, port, path, TOKEN)
    return answer.status, answer.body


async def test_readyz_names_a_closed_listener_then_a_closed_store(node: Node) -> None:
    assert (await _get(node.admin_port, "/readyz"))[0] == 200
    await node.classic.close()
    status, body = await _get(node.admin_port, "/readyz")
    assert status == 503
    assert b'"classic":"not listening"' in body
    assert b"store" not in body
    await node.store.close()
    status, body = await _get(node.admin_port, "/readyz")
    assert status == 503
    assert b'"store":"store is closed"' in body
    assert (await _get(node.admin_port, "/healthz"))[0] == 200
    status, body = await _get(node.admin_port, "/admin/summary")
    assert status == 503
    assert b"the store failed" in body


async def test_two_servers_in_one_process_count_apart(node: Node, tmp_path: Path) -> None:
    other = await _node(tmp_path / "b")
    try:
        reply = await asyncio.to_thread(
            exchange, node.classic_port, wire.register("Ana", "ana", "01/02/2000")
        )
        assert reply == b"0\0"
        mine = parse((await _get(node.admin_port, "/metrics"))[1].decode())
        theirs = parse((await _get(other.admin_port, "/metrics"))[1].decode())
        key = ("dmds_request_duration_seconds_count", (("operation", "REGISTER"), ("protocol", "classic")))
        assert mine[key] == 1
        assert key not in theirs
        assert mine["dmds_users_registered", ()] == 1
        assert theirs["dmds_users_registered", ()] == 0
    finally:
        await other.close()
