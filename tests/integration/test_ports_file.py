"""`dmds serve --ports-file F`: once every listener is bound, F holds the ports they bound and the pid."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests import wire
from tests.conftest import CHEAP_ARGON2
from tests.integration.admin_http import free_port
from tests.integration.listener import exchange


def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.02)
    ports: dict[str, int] = json.loads(path.read_text())
    return ports


def _serve(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports_file, log = tmp_path / "run" / "ports.json", tmp_path / "serve.log"
    ports_file.parent.mkdir()
    args = [
        sys.executable, "-m", "dmds.cli.main", "serve", "--ports-file", str(ports_file), "--port", "0",
        "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data"),
        "--session-host", "127.0.0.1", "--session-port", "0", "--web-host", "127.0.0.1", "--web-port", "0",
        *CHEAP_ARGON2, *flags,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    ports = _wait_for(ports_file, proc, log)
    assert list(ports_file.parent.iterdir()) == [ports_file]  # the temporary file was renamed
    return proc, ports


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_ports_file_names_ports_that_answer(tmp_path: Path) -> None:
    admin = free_port()
    proc, ports = _serve(tmp_path, "--admin-port", str(admin))
    try:
        assert set(ports) == {"classic", "session", "web", "admin", "pid"}
        assert ports["pid"] == proc.pid
        assert ports["admin"] == admin
        assert all(ports[name] > 0 for name in ("classic", "session", "web"))
        reply = exchange(ports["classic"], wire.register("Ana Ports", "ana", "01/02/2000"))
        assert reply == b"0\0"
        with socket.create_connection(("127.0.0.1", ports["session"]), timeout=5):
            pass
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/healthz", timeout=5) as answer:
            assert answer.status == 200
        with socket.create_connection(("127.0.0.1", ports["web"]), timeout=5) as sock:
            sock.sendall(b"GET /session HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 ")
    finally:
        _stop(proc)


def test_ports_file_leaves_out_the_admin_port_when_off(tmp_path: Path) -> None:
    proc, ports = _serve(tmp_path, "--admin-port", "0")
    try:
        assert set(ports) == {"classic", "session", "web", "pid"}
    finally:
        _stop(proc)


def test_the_ports_file_goes_when_the_server_stops(tmp_path: Path) -> None:
    proc, _ = _serve(tmp_path, "--admin-port", "0")
    _stop(proc)
    # Ports nobody listens on any more must not be read by the next program that looks.
    assert list((tmp_path / "run").iterdir()) == []
