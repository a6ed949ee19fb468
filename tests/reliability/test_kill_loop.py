"""The kill loop, short: SIGKILL the server 3 times under load from both protocols; nothing
acknowledged is lost or stored twice, everything arrives in order with its receipts.
`dmds bench chaos --part kill` is the long form (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmds.bench.killloop import MUST_BE_ZERO, KillLoopConfig, kill_loop
from dmds.cluster.postgres import LocalPostgres

SEED = 20240611


@pytest.mark.timeout(180)
async def test_sigkills_under_load_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    cfg = KillLoopConfig(
        kills=3, seed=SEED, workdir=tmp_path, interval_s=(1.0, 2.0), tail_s=1.0, time_limit_s=120
    )
    counts = await kill_loop(cfg)
    assert counts["kills"] == 3
    # Every life of the server acknowledged messages, from both protocols, and the session clients
    # came back to the restarted server by themselves.
    assert all(n > 0 for n in counts["acknowledged_per_life"]), counts["acknowledged_per_life"]
    assert counts["acknowledged_session"] > 0
    assert counts["acknowledged_classic"] > 0
    assert counts["session_reconnections"] > 0
    for name in MUST_BE_ZERO:
        assert counts[name] == 0, (name, counts["problems"])
    assert counts["delivered"] >= counts["acknowledged"]
    assert counts["ok"], counts["problems"]
    assert counts["server_exit_code"] == 0


@pytest.mark.timeout(240)
async def test_two_nodes_and_their_database_killed_under_load(
    tmp_path: Path, crashable_postgres: LocalPostgres
) -> None:
    """Two nodes on one PostgreSQL, users spread over both: two kills of a random node and one of
    the database. The nodes answer store failures meanwhile, reconnect by themselves, and the
    ledger balances."""
    cfg = KillLoopConfig(
        kills=3, seed=SEED, workdir=tmp_path, interval_s=(1.0, 2.0), tail_s=1.0, time_limit_s=150,
        nodes=2, store=crashable_postgres.create_database("dmds"), lease_s=1.0,
        database=crashable_postgres, kill_db_every=3,
    )  # fmt: skip
    counts = await kill_loop(cfg)
    assert (counts["kills"], counts["database_kills"], counts["nodes"]) == (3, 1, 2)
    assert all(n > 0 for n in counts["acknowledged_per_life"]), counts["acknowledged_per_life"]
    assert counts["acknowledged_session"] > 0
    assert counts["acknowledged_classic"] > 0
    for name in MUST_BE_ZERO:
        assert counts[name] == 0, (name, counts["problems"])
    assert counts["ok"], counts["problems"]
    assert counts["server_exit_code"] == 0
