"""`dmds cluster`: one command starts a database and nodes that serve one set of users, and Ctrl-C
stops them all."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import subprocess
import sys
import time

from dmds.cli.cluster import PORTS_PER_NODE
from dmds.protocols.session import frames as f
from tests import wire
from tests.integration.listener import exchange, message, sent
from tests.integration.session_wire import account
from tests.integration.test_cluster import classic_online


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_block(count: int) -> int:
    """A base port with `count` free ports from it (checked, then released: a small race), below
    the kernel's ephemeral range so that no client connection takes one meanwhile."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports")


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float = 60) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"dmds cluster ended: {''.join(lines)}")
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"no {marker!r} in {''.join(lines)}")


async def test_two_nodes_one_service_then_ctrl_c_stops_everything() -> None:
    base = _free_block(2 * PORTS_PER_NODE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmds.cli.main", "cluster", "--nodes", "2", "--base-port", str(base),
         "--soap-port", "0", "--", "--argon2-time-cost", "1", "--argon2-memory-kib", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        guide = await asyncio.to_thread(_read_until, proc, "Ctrl-C stops everything")
        assert f"node2  {base + 3:>7} {base + 4:>7}" in guide
        assert f"--session -s 127.0.0.1:{base + 1},127.0.0.1:{base + 4}" in guide
        database = re.search(r"@127\.0\.0\.1:(\d+)/dmds \(thrown away at exit\)", guide)
        assert database, guide
        # A classic user on node1 and a session user on node2 are users of one service.
        juan = classic_online(base, "juan")
        maria = await account(base + 4, "maria")
        await maria.request(f.Send, to="juan", key="k", text="hola")
        assert await asyncio.to_thread(juan.wait, 1) == [message("maria", 1, "hola")]
        assert exchange(base + 3, wire.send("juan", "maria", "adios")) == sent(1)
        assert (await maria.expect(f.Message)).text == "adios"
        await maria.close()
        juan.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopping" in out
    assert "logs kept" not in out
    pattern = f"--port {base} |--port {base + 3} |-p {database.group(1)} "
    left = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    assert left.stdout.split() == []
