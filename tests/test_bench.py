"""Each benchmark, run tiny: it works and checks what it measures (never a timed assertion)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmds.bench import classic, common
from dmds.cli.main import build_parser


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv])


def test_register_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "register.json"
    args = _args("register", "--clients", "2", "--seconds", "0.5", "--sync", "normal", "--json", str(out))
    assert args.func(args) == 0
    result = common.load(out)
    assert [r.system for r in result.runs] == ["baseline (uvloop, answers at once)", "dmds --sync normal"]
    assert all(r.count > 0 and r.errors == 0 for r in result.runs)
    assert result.runs[1].extra["ratio"] > 0
    assert result.runs[1].server_cpu_s is not None
    assert result.runs[1].generator_cpu_s is not None


def test_classic_send_bench_runs(tmp_path: Path) -> None:
    args = _args(
        "send", "--protocol", "classic", "--pairs", "2", "--messages", "30", "--timeout", "60",
        "--json", str(tmp_path / "send.json"),
    )  # fmt: skip
    result = classic.run_send(args)
    (run,) = result.runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 60
    assert run.extra["receipts"] == 60
    assert run.latency_ms is not None
    assert common.finish(result, args.json) == 0


def test_classic_queue_bench_runs(tmp_path: Path) -> None:
    args = _args(
        "queue", "--protocol", "classic", "--messages", "200", "--timeout", "60",
        "--json", str(tmp_path / "queue.json"),
    )  # fmt: skip
    result = classic.run_queue(args)
    (run,) = result.runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 200
    assert run.extra["receipts"] == 200
    assert common.finish(result, args.json) == 0


def test_connections_bench_runs(tmp_path: Path) -> None:
    args = _args("connections", "--count", "50", "--hold", "0.5", "--json", str(tmp_path / "conn.json"))
    assert args.func(args) == 0
    (run,) = common.load(tmp_path / "conn.json").runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 50
    assert run.extra["logged_in"] == 50
    assert run.extra["rss_held"] > 0
    assert "bytes_per_connection" in run.extra
    assert "bytes_per_connection_after_close" in run.extra
