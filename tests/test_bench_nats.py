"""`dmds bench send|queue --nats`, run tiny against a real nats-server: it works and checks what it
measures (never a timed assertion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmds.bench import common
from dmds.cli.main import build_parser

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("workload", ["send", "queue"])
def test_nats_jetstream_runs_beside_dmds_under_the_same_checks(tmp_path: Path, workload: str) -> None:
    """Every message once, in order, with its payload, every publish ack back, and the stream emptied
    by the subscriber's acks; the server's CPU measured, and its lack of an fsync per message said."""
    out = tmp_path / f"{workload}.json"
    argv = ["bench", workload, "--protocol", "session", "--messages", "300", "--nats", "--json", str(out)]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    dmds, nats = data["runs"]
    assert dmds["system"] == "dmds --sync full"
    assert nats["system"].startswith("NATS JetStream 2.")
    assert "(file, " in nats["system"]
    assert (nats["count"], nats["errors"], nats["extra"]["problems"]) == (300, 0, [])
    assert nats["server_cpu_s"] is not None
    assert nats["generator_cpu_s"] is not None
    assert nats["server_cpu_us_per_op"] == pytest.approx(nats["server_cpu_s"] / 300 * 1e6)
    if workload == "send":
        assert nats["latency_ms"]["p50"] > 0
    assert data["machine"]["calibration_s"] > 0
    result = common.load(out)  # the derived figures do not get in the way of reading it back
    assert "calibration" in common.table(result)
