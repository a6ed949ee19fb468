"""The session-protocol benchmarks, run tiny: they work and check what they measure (never a timed
assertion)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from dmds.cli.main import build_parser
from tests.conftest import ServerProcess


def test_session_send_bench_checks_every_message_and_receipt(tmp_path: Path) -> None:
    out = tmp_path / "send.json"
    args = build_parser().parse_args(
        ["bench", "send", "--protocol", "session", "--messages", "300", "--window", "50", "--json", str(out)]
    )
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["workload"] == "send"
    [run] = result["runs"]
    assert run["system"] == "dmds --sync full"
    assert run["count"] == 300
    assert run["errors"] == 0
    assert run["server_cpu_s"] is not None
    assert run["latency_ms"]["p50"] > 0
    assert result["fsync_ms"] > 0


def test_session_queue_bench_drains_in_order(tmp_path: Path) -> None:
    out = tmp_path / "queue.json"
    args = build_parser().parse_args(
        [
            "bench",
            "queue",
            "--protocol",
            "session",
            "--messages",
            "400",
            "--sync",
            "normal",
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    [run] = json.loads(out.read_text())["runs"]
    assert (run["system"], run["count"], run["errors"]) == ("dmds --sync normal", 400, 0)


def test_session_bench_against_a_running_server(server: ServerProcess) -> None:
    args = build_parser().parse_args(
        ["bench", "send", "--host", "127.0.0.1", "--port", str(server.session_port), "--messages", "50"]
    )
    assert args.func(args) == 0


def test_bad_bench_input_gets_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    zero = parser.parse_args(["bench", "queue", "--messages", "0"])
    with pytest.raises(SystemExit, match="--messages must be at least 1"):
        zero.func(zero)
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    args = parser.parse_args(["bench", "send", "--host", "127.0.0.1", "--port", str(port), "--messages", "5"])
    assert args.func(args) == 1
    assert "dmds bench send: [Errno 111] Connection refused" in capsys.readouterr().err


@pytest.mark.parametrize("workload", ["send", "queue"])
def test_the_minimal_relay_runs_beside_dmds_under_the_same_checks(tmp_path: Path, workload: str) -> None:
    """The reference of the durable path: every message once, in order, with its receipt (send),
    drained in order (queue), through a relay process of its own whose CPU is measured."""
    out = tmp_path / f"{workload}.json"
    argv = ["bench", workload, "--protocol", "session", "--messages", "300", "--relay", "--json", str(out)]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    dmds, relay = json.loads(out.read_text())["runs"]
    assert dmds["system"] == "dmds --sync full"
    assert (relay["system"], relay["count"], relay["errors"]) == ("minimal relay (fsync)", 300, 0)
    assert relay["server_cpu_s"] is not None
