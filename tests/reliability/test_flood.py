"""The flood, short: a few hundred hostile connections on both ports while a session pair and a
classic pair talk. `dmds bench chaos --part flood` is the long form (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmds.bench.flood import FloodConfig, flood
from dmds.bench.killloop import MUST_BE_ZERO

SEED = 20240611
CONNECTIONS = 400


@pytest.mark.timeout(180)
async def test_hostile_connections_hurt_neither_the_pairs_nor_the_server(tmp_path: Path) -> None:
    cfg = FloodConfig(
        connections=CONNECTIONS,
        seed=SEED,
        workdir=tmp_path,
        concurrency=200,
        hold_s=3.0,
        cheap_argon2=True,
        time_limit_s=150,
    )
    counts = await flood(cfg)
    assert counts["hostile_connections"] == CONNECTIONS
    assert counts["server_alive_after_flood"]
    assert counts["server_alive_at_end"]
    assert counts["server_exit_code"] == 0
    # The pairs: everything acknowledged arrived once, in order, with every receipt (no crash here,
    # so not one session receipt may be missing either), and they kept talking during the flood.
    for name in MUST_BE_ZERO:
        assert counts[name] == 0, (name, counts["problems"])
    assert counts["receipts_missing_session"] == 0
    assert counts["acknowledged_session"] > 0
    assert counts["acknowledged_classic"] > 0
    assert counts["pair_acknowledged_during"] > 0
    # Memory: the peak (VmHWM) and what is left afterwards stay under the bound from the limits.
    assert counts["rss_peak_kib"] <= counts["rss_bound_kib"], counts["rss_bound_parts_kib"]
    assert counts["rss_after_kib"] <= counts["rss_bound_kib"]
    # The server's own limits and timeouts ended hostile connections, not only the flood's patience.
    outcomes = counts["hostile_outcomes"]
    for name in ("session oversized prefix", "session garbage", "classic stall", "session stall in hello"):
        closed = outcomes.get(f"{name}: closed by the server", 0) + outcomes.get(
            f"{name}: reset by the server", 0
        )
        assert closed > 0, (name, outcomes)
    assert counts["ok"], counts["problems"]
