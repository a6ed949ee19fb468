"""`dmds bench mqtt`, run tiny against a real Mosquitto: it works and checks what it measures (never
a timed assertion)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from dmds.bench import common, mosquitto, mqtt, mqtt_wire
from dmds.cli.main import build_parser

pytestmark = [
    pytest.mark.skipif(
        shutil.which(mosquitto.MOSQUITTO) is None, reason="Mosquitto is not installed (make system-deps)"
    ),
    pytest.mark.timeout(120),
]

TINY = ["--messages", "300", "--timeout", "60"]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "mqtt", *argv])


def _all_checked(result: common.Result, messages: int) -> None:
    assert result.runs
    for run in result.runs:
        assert (run.count, run.errors, run.extra["problems"]) == (messages, 0, [])
        assert run.system.startswith("mosquitto ")
        assert "persistent session" in run.system
        assert run.seconds > 0
        assert run.server_cpu_s is not None
        assert run.generator_cpu_s is not None
    assert result.fsync_ms is not None
    assert "fsync" in result.checked


def test_send_runs_and_checks_every_message() -> None:
    args = _args("send", *TINY, "--window", "50", "--runs", "2")  # the second run reuses the broker
    result = mqtt.run(args)
    assert result.workload == "mqtt-send"
    assert result.params["window"] == 50
    _all_checked(result, 300)
    assert all(run.latency_ms is not None for run in result.runs)


def test_queue_runs_through_the_cli_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "queue.json"
    args = _args("queue", *TINY, "--runs", "1", "--json", str(out))
    assert args.func(args) == 0
    result = common.load(out)
    assert result.workload == "mqtt-queue"
    _all_checked(result, 300)


def test_send_and_queue_alternate_on_one_broker() -> None:
    """What the session bench does with `--mqtt`: one broker, runs of both kinds one after the other."""
    with mosquitto.mosquitto() as broker:
        assert broker.pid is not None
        assert broker.version
        runs = [
            mqtt.send_once(broker, 200, 1, 60),  # window 1: one message in flight at a time
            mqtt.queue_once(broker, 200, 60),
            mqtt.send_once(broker, 200, 500, 60),  # a window wider than the run
        ]
    assert [(r.count, r.errors) for r in runs] == [(200, 0)] * 3


def test_a_window_beyond_the_packet_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        mqtt.send_once(mosquitto.Broker("127.0.0.1", 1, None, ""), 10, 70000, 1)


async def test_the_parser_takes_packets_split_anywhere_and_answers_each_read_once() -> None:
    client = mqtt_wire.Client()
    reads: list[list[tuple[int, bytes]]] = []
    acks: list[list[int]] = []
    client.on_publishes, client.on_pubacks = reads.append, acks.append
    big = b"x" * 300  # a remaining length of two bytes
    topic = mqtt_wire.utf8_string("t")
    stream = (
        mqtt_wire.publish_packet(topic, 7, b"message 1")
        + mqtt_wire.puback_packet(65535)
        + mqtt_wire.publish_packet(topic, 8, big)
    )
    for i in range(len(stream)):  # one byte at a time
        client.data_received(stream[i : i + 1])
    assert reads == [[(7, b"message 1")], [(8, big)]]
    assert acks == [[65535]]
    client.data_received(stream)  # all at once: one batch per kind
    assert reads[-1] == [(7, b"message 1"), (8, big)]
    assert acks[-1] == [65535]
    assert client.problems == []
    assert client.buffer == bytearray()


def test_varint_and_packet_ids() -> None:
    assert [mqtt_wire.varint(n) for n in (0, 127, 128, 16383, 16384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]
    assert [mqtt_wire.packet_id(n) for n in (1, 65535, 65536, 65537)] == [1, 65535, 1, 2]
