"""`dmds serve --log-format json`: every line of stderr is one JSON object with the fields operators
filter on, including the structured ones (alias, peer) of the calls that pass them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from dmds.protocols.session import frames as f
from tests import wire
from tests.conftest import FAST, ServerFactory
from tests.integration.listener import Listener, exchange
from tests.integration.session_wire import account


def records(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        record = json.loads(line)  # each line, whole, is one object
        assert isinstance(record, dict), line
        for key in ("time", "level", "logger", "message"):
            assert isinstance(record[key], str), (key, line)
        assert record["time"].endswith("Z")
        assert datetime.fromisoformat(record["time"]).utcoffset() == UTC.utcoffset(None)
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        out.append(record)
    return out


async def test_json_logs_are_one_object_per_line_with_the_fields_operators_filter_on(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(*FAST, "--log-format", "json")
    juan = await account(server.session_port, "juan")  # a session login
    assert isinstance(await juan.request(f.Subscribe), f.Presence)
    assert exchange(server.port, wire.register("María", "maria", "01/02/2000")) == b"0\0"
    assert exchange(server.port, wire.connect("maria", Listener().port)) == b"0\0"  # a classic connect
    assert exchange(server.port, b"SEND\0maria\0juan\0" + b"x" * 70_000 + b"\0") == b"2\0\0\0\0\0"
    with socket.create_connection(("127.0.0.1", server.web_port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn's own warning: JSON too
        sock.recv(1000)
    await juan.close()
    assert server.stop() == 0

    logged = records(server.log())
    by_message = {r["message"]: r for r in logged}
    login = next(r for r in logged if r["message"].startswith("session login juan"))
    assert (login["alias"], login["peer"], login["logger"]) == (
        "juan",
        "127.0.0.1",
        "dmds.transports.session_server",
    )
    assert login["level"] == "INFO"
    connected = next(r for r in logged if r["message"].startswith("connected maria"))
    assert connected["alias"] == "maria"
    refused = next(r for r in logged if r["message"].startswith("bad SEND"))
    assert refused["op"] == "SEND"
    assert refused["peer"].startswith("127.0.0.1:")
    assert any(r["logger"].startswith("uvicorn") for r in logged), by_message
    assert "stopped" in by_message


def test_a_bad_setting_is_reported_as_json_too() -> None:
    env = {**os.environ, "DMDS_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "serve", "--port", "99999"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    (record,) = records(done.stderr.decode())
    assert record["level"] == "ERROR"
    assert "port: not a TCP port: 99999" in record["message"]
