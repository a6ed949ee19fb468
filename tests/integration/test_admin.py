"""The admin port of a real `dmds serve`: metrics that move by exactly what was done, the token,
health and readiness (a PostgreSQL that stops and comes back), and /admin/summary."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmds.cluster.postgres import LocalPostgres
from dmds.protocols.session import frames as f
from tests import wire
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.integration.admin_http import (
    admin_flags,
    admin_token,
    free_port,
    get,
    get_raw,
    metric_names,
    scrape,
    value,
)
from tests.integration.listener import exchange, sent
from tests.integration.session_wire import Peer, account

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(*FAST, *admin_flags())


async def test_metrics_move_by_what_was_done(admin_server: ServerProcess) -> None:
    server = admin_server
    before = await scrape(server)
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    for n in range(3):
        assert isinstance(await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}"), f.Accepted)
    resent = await juan.request(f.Send, to="maria", key="k0", text="m0")  # the same key: stored once
    assert isinstance(resent, f.Accepted)
    refused = await juan.request(f.Send, to="nobody", key="x", text="lost")
    assert isinstance(refused, f.Error), refused
    for n in (1, 2, 3):
        await maria.expect(f.Message, message_id=n)
    maria.write(f.Ack(message_ids=[1, 2]))
    await juan.expect(f.Delivered, message_id=2)
    maria.write(f.MarkRead(message_ids=[1]))
    await juan.expect(f.Read, message_id=1)
    assert exchange(server.port, wire.register("Eva", "eva", "01/02/2000")) == b"0\0"
    assert exchange(server.port, wire.send("eva", "maria", "not connected"))[:2] == b"2\0"

    after = await scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("dmds_messages_accepted_total") == 3
    assert moved("dmds_messages_delivered_total") == 2
    assert moved("dmds_messages_read_total") == 1
    assert moved("dmds_messages_refused_total", reason="UnknownUser") == 1
    assert moved("dmds_messages_refused_total", reason="NotConnected") == 1
    assert moved("dmds_logins_total", method="password", result="ok") == 2
    assert moved("dmds_request_duration_seconds_count", protocol="session", operation="Send") == 5
    assert moved("dmds_request_duration_seconds_count", protocol="session", operation="Login") == 2
    assert moved("dmds_request_duration_seconds_count", protocol="classic", operation="REGISTER") == 1
    assert moved("dmds_request_duration_seconds_count", protocol="classic", operation="SEND") == 1
    assert value(after, "dmds_connections", protocol="session", transport="tcp") == 2
    assert value(after, "dmds_users_online") == 2
    assert value(after, "dmds_users_registered") == 3
    assert value(after, "dmds_stored_messages") == 1  # m2: pushed, not acknowledged
    assert value(after, "dmds_stored_bytes") == len("m2")
    assert value(after, "dmds_store_up") == 1
    assert moved("dmds_store_batch_size_count") > 0
    assert moved("dmds_store_batch_size_sum") >= 3 + 2 + 3  # the sends, registrations, acks...
    assert moved("dmds_store_commit_seconds_count") > 0

    # a wrong password and a token login
    wrong = await Peer.open(server.session_port)
    assert isinstance(await wrong.request(f.Login, alias="juan", password="wrong one"), f.Error)
    again = await Peer.open(server.session_port)
    assert isinstance(await again.request(f.Login, token=juan.token), f.LoggedIn)
    last = await scrape(server)
    assert value(last, "dmds_logins_total", method="password", result="failed") == 1
    assert value(last, "dmds_logins_total", method="token", result="ok") == 1
    for peer in (wrong, again, juan):
        await peer.close()
    deadline = time.monotonic() + 10
    while value(await scrape(server), "dmds_connections", protocol="session", transport="tcp") != 1:
        assert time.monotonic() < deadline, "closed connections still counted"
        await asyncio.sleep(0.1)


async def test_event_loop_lag_is_measured(admin_server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while value(samples := await scrape(admin_server), "dmds_event_loop_lag_seconds_count") < 2:
        assert time.monotonic() < deadline, "no lag measured"
        await asyncio.sleep(0.2)
    assert 0 <= value(samples, "dmds_event_loop_lag_last_seconds") < 1


async def test_send_rate_limit_hits_are_counted(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, *admin_flags(), "--max-send-rate", "1", "--send-burst", "2")
    juan = await account(server.session_port, "juan")
    await account(server.session_port, "maria")
    answers = [await juan.request(f.Send, to="maria", key=f"k{n}", text="x") for n in range(5)]
    limited = [a for a in answers if isinstance(a, f.Error)]
    assert len(limited) >= 2  # a burst of 2 at 1 per second
    samples = await scrape(server)
    assert value(samples, "dmds_rate_limited_total", limit="send") == len(limited)
    assert value(samples, "dmds_messages_refused_total", reason="LimitExceeded") == len(limited)
    assert value(samples, "dmds_messages_accepted_total") == 5 - len(limited)


async def test_pushes_failed_are_counted(admin_server: ServerProcess) -> None:
    server = admin_server
    assert exchange(server.port, wire.register("Juan", "juan", "01/02/2000")) == b"0\0"
    assert exchange(server.port, wire.register("Ana", "ana", "01/02/2000")) == b"0\0"
    # juan's listener is a port nobody listens on: the push of ana's message fails.
    assert exchange(server.port, wire.connect("juan", free_port())) == b"0\0"
    assert exchange(server.port, wire.connect("ana", free_port())) == b"0\0"
    assert exchange(server.port, wire.send("ana", "juan", "hola")) == sent(1)
    deadline = time.monotonic() + 10
    while value(await scrape(server), "dmds_pushes_failed_total") != 1:
        assert time.monotonic() < deadline, "the failed push was not counted"
        await asyncio.sleep(0.1)


async def test_the_token_is_required_except_for_health(admin_server: ServerProcess) -> None:
    server = admin_server
    for path in ("/metrics", "/admin/summary"):
        missing = await get(server, path, token=None)
        assert missing.status == 401
        assert missing.headers.get("www-authenticate", "").startswith("Bearer")
        assert (await get(server, path, token="not the token")).status == 403
        assert (await get(server, path)).status == 200
    assert (await get(server, "/nothing", token=None)).status == 401  # unknown paths too
    token = admin_token(server)
    assert (await get(server, "/metrics", token=token[:-1])).status == 403
    assert (await get_raw(server, "/metrics", f"bearer {token}")).status == 200  # RFC 9110: any case
    assert (await get_raw(server, "/metrics", f"Basic {token}")).status == 403
    for path in ("/healthz", "/readyz"):
        answer = await get(server, path, token=None)
        assert answer.status == 200, answer
    assert (await get(server, "/readyz", token=None)).json() == {"status": "ready"}


def test_the_token_file_is_private_and_stable(server_factory: ServerFactory, tmp_path: Path) -> None:
    flags = admin_flags()
    server = server_factory(*flags)
    assert server.admin_token_path == tmp_path / "data" / "admin-token"
    token = admin_token(server)
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(server.admin_token_path).st_mode) == 0o600
    server.stop()
    server.start()
    assert admin_token(server) == token
    server.stop()

    os.chmod(tmp_path / "data" / "admin-token", 0o644)  # readable by others: refused, clearly
    proc = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "serve", "--host", "127.0.0.1", "--port", "0",
         "--session-host", "127.0.0.1", "--session-port", "0", "--web-host", "127.0.0.1", "--web-port", "0",
         "--data-dir", str(tmp_path / "data"), *flags],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "readable by others" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_admin_port_is_off_with_0(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory("--admin-port", "0")
    assert "admin port" not in server.log()
    assert not (tmp_path / "data" / "admin-token").exists()


async def test_summary(admin_server: ServerProcess) -> None:
    await _check_summary(admin_server)


async def test_summary_and_metrics_on_postgresql(server_factory: ServerFactory, pg_url: str) -> None:
    server = server_factory(*FAST, *admin_flags(), "--store", pg_url)
    await _check_summary(server)
    samples = await scrape(server)
    assert value(samples, "dmds_pg_connections", role="writer") == 1
    assert value(samples, "dmds_pg_connections", role="listen") == 1
    assert value(samples, "dmds_pg_listen_reconnects_total") == 0
    assert value(samples, "dmds_stored_messages") == 2


async def _check_summary(server: ServerProcess) -> None:
    empty = (await get(server, "/admin/summary")).json()
    assert (empty["users"], empty["online"], empty["stored_messages"]) == (0, 0, 0)
    assert empty["oldest_undelivered"] is None
    for offline in ("maria", "luis"):
        await (await account(server.session_port, offline)).close()
    juan = await account(server.session_port, "juan")
    ana = await account(server.session_port, "ana")
    first_sent = time.time()
    assert isinstance(await juan.request(f.Send, to="maria", key="a", text="hola"), f.Accepted)
    await asyncio.sleep(1.2)  # the oldest is the first, well apart from the second
    assert isinstance(await juan.request(f.Send, to="luis", key="b", text="¿qué tal?"), f.Accepted)
    deadline = time.monotonic() + 10
    while (summary := (await get(server, "/admin/summary")).json())["online"] != 2:  # maria's close
        assert time.monotonic() < deadline, summary
        await asyncio.sleep(0.1)
    assert summary["users"] == 4
    assert summary["online"] == 2
    assert summary["stored_messages"] == 2
    assert summary["stored_bytes"] == len(b"hola") + len("¿qué tal?".encode())
    assert first_sent - 0.5 < summary["oldest_undelivered"] < first_sent + 0.6
    assert 1.2 <= summary["oldest_undelivered_age_s"] < 10
    assert summary["store_bytes"] > 0
    await ana.close()


async def test_readyz_follows_postgresql(
    server_factory: ServerFactory, crashable_postgres: LocalPostgres
) -> None:
    url = crashable_postgres.create_database("dmds")
    server = server_factory(*FAST, *admin_flags(), "--store", url, "--ready-timeout-s", "1")
    assert (await get(server, "/readyz", token=None)).status == 200
    crashable_postgres.kill()
    down = await get(server, "/readyz", token=None)
    assert down.status == 503, down
    body = down.json()
    assert body["status"] == "not ready"
    assert "store" in body["failed"]
    assert (await get(server, "/healthz", token=None)).status == 200  # alive, only not ready
    assert value(await scrape(server), "dmds_store_up") == 0

    crashable_postgres.restart()
    deadline = time.monotonic() + 30
    while (await get(server, "/readyz", token=None)).status != 200:
        assert time.monotonic() < deadline, "not ready again after the database came back"
        await asyncio.sleep(0.2)
    samples = await scrape(server)
    assert value(samples, "dmds_pg_store_reconnects_total") >= 1
    assert value(samples, "dmds_pg_listen_reconnects_total") >= 1
    assert value(samples, "dmds_store_batches_failed_total") >= 1


async def test_the_dashboard_uses_only_metrics_that_exist(server_factory: ServerFactory, pg_url: str) -> None:
    server = server_factory(*FAST, *admin_flags(), "--store", pg_url)
    names = await metric_names(server)
    dashboard = json.loads((ROOT / "docs" / "operations" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = {m for expr in exprs for m in re.findall(r"\bdmds_[a-z_]+", expr)}
    assert used, exprs
    missing = used - names
    assert not missing, f"the dashboard uses metrics that do not exist: {sorted(missing)}"
    documented = (ROOT / "docs" / "operations.md").read_text()
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in names}
    undocumented = {n for n in families if f"`{n}" not in documented}
    assert not undocumented, f"docs/operations.md does not list: {sorted(undocumented)}"
