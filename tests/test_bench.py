"""Each benchmark, run tiny: it works and checks what it measures (never a timed assertion).

The workloads write their JSON into one directory for the module, which the report test then reads
(with a synthetic result of several runs, so that it also has medians, whiskers and ratios to draw).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dmds.bench import classic, common, report
from dmds.cli.main import build_parser


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv])


def test_register_bench_runs(results: Path) -> None:
    out = results / "register.json"
    args = _args("register", "--clients", "2", "--seconds", "0.5", "--sync", "normal", "--json", str(out))
    assert args.func(args) == 0
    result = common.load(out)
    assert [r.system for r in result.runs] == ["baseline (uvloop, answers at once)", "dmds --sync normal"]
    assert all(r.count > 0 and r.errors == 0 for r in result.runs)
    assert result.runs[1].extra["ratio"] > 0
    assert result.runs[1].server_cpu_s is not None
    assert result.runs[1].generator_cpu_s is not None


def test_classic_send_bench_runs(results: Path) -> None:
    args = _args(
        "send", "--protocol", "classic", "--pairs", "2", "--messages", "30", "--timeout", "60",
        "--json", str(results / "send.json"),
    )  # fmt: skip
    result = classic.run_send(args)
    (run,) = result.runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 60
    assert run.extra["receipts"] == 60
    assert run.latency_ms is not None
    assert common.finish(result, args.json) == 0


def test_classic_queue_bench_runs(results: Path) -> None:
    args = _args(
        "queue", "--protocol", "classic", "--messages", "200", "--timeout", "60",
        "--json", str(results / "queue.json"),
    )  # fmt: skip
    result = classic.run_queue(args)
    (run,) = result.runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 200
    assert run.extra["receipts"] == 200
    assert common.finish(result, args.json) == 0


def test_connections_bench_runs(results: Path) -> None:
    args = _args("connections", "--count", "50", "--hold", "0.5", "--json", str(results / "conn.json"))
    assert args.func(args) == 0
    (run,) = common.load(results / "conn.json").runs
    assert run.errors == 0, run.extra["problems"]
    assert run.count == 50
    assert run.extra["logged_in"] == 50
    assert run.extra["rss_held"] > 0
    assert "bytes_per_connection" in run.extra
    assert "bytes_per_connection_after_close" in run.extra


def test_report_of_the_results(results: Path, tmp_path: Path) -> None:
    several = common.Result(
        "synthetic",
        {"runs": 3},
        [
            common.Run(system, 1000 * k * (1 + (system == "b")), 1.0, 0.5, 0.25, latency_ms={"p50": 1.0})
            for k in (1, 2, 3)
            for system in ("a", "b")
        ],
        "nothing: made up for the report",
    )
    assert common.finish(several, results / "synthetic.json") == 0
    other = common.Result("synthetic", {"runs": 1}, [common.Run("a", 10, 1.0)], "the same, other parameters")
    assert common.finish(other, results / "synthetic2.json") == 0
    files = sorted(results.glob("*.json"))
    out = tmp_path / "report"
    args = _args("report", *map(str, files), "--out", str(out))
    assert args.func(args) == 0
    markdown = (out / "report.md").read_text()
    for path in files:
        assert f"## {common.load(path).workload}" in markdown
    assert "| b [synthetic] | 3 | 4,000 (2,000-6,000) |" in markdown
    assert "| a [synthetic2] | 1 | 10 (10-10) |" in markdown  # not pooled with the other a
    assert "| 2.00 |" in markdown  # b's ratio to a
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if (results / "conn.json").exists():  # the workloads ran before, in this module
        assert report.EXTRA_COLUMNS["bytes_per_connection"][0] in markdown
