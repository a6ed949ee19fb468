"""Servers under benchmark, as child processes: started on free loopback ports, stopped cleanly."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Seconds a server has to say it is listening.
START_TIMEOUT_S = 30.0


def start(args: list[str], pattern: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start `args`, wait for `pattern` (one group: the port) in its output; returns (process, port)."""
    handle = log.open("wb")
    proc = subprocess.Popen(args, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)
    handle.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"), re.MULTILINE)
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"could not start {args}: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Dmds:
    """A `dmds serve` on loopback with a data dir of its own."""

    proc: subprocess.Popen[bytes]
    port: int
    session_port: int

    @classmethod
    def start(cls, data_dir: Path, sync: str, *extra: str) -> Dmds:
        log = data_dir.with_suffix(".log")
        args = [
            sys.executable, "-m", "dmds.cli.main", "serve", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data_dir), "--sync", sync, "--session-host", "127.0.0.1", "--session-port", "0",
            "--web-host", "127.0.0.1", "--web-port", "0", *extra,
        ]  # fmt: skip
        proc, port = start(args, r"classic server listening on [^ ]+:(\d+)", log)
        session = re.search(r"session server listening on [^ ]+:(\d+)", log.read_text(errors="replace"))
        if session is None:  # the lines come in order: the session one is next
            time.sleep(0.5)
            session = re.search(r"session server listening on [^ ]+:(\d+)", log.read_text(errors="replace"))
        if session is None:
            stop(proc)
            raise RuntimeError(f"no session listener: {log.read_text(errors='replace')}")
        return cls(proc, port, int(session.group(1)))

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Target:
    """Where a workload sends its load: a server the bench started (its pid known) or a running one."""

    host: str
    classic_port: int | None
    session_port: int | None
    pid: int | None  # None for a server the bench did not start: its CPU is not reported
    data_dir: Path | None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid is not None else None


@contextmanager
def target(args: argparse.Namespace, sync: str, *extra: str) -> Iterator[Target]:
    """The server under test: `--host`/`--port` if given, else a `dmds serve` on a temporary data dir.

    With `--host`, `--port` is the port of the protocol under test (`args.protocol`, classic if the
    workload has none)."""
    if args.host is not None:
        port = args.port if args.port is not None else 7000
        session = getattr(args, "protocol", "classic") == "session"
        yield Target(args.host, None if session else port, port if session else None, None, None)
        return
    with tempfile.TemporaryDirectory(prefix="dmds-bench-", dir=args.data_dir) as tmp:
        data_dir = Path(tmp) / "data"
        server = Dmds.start(data_dir, sync, *extra)
        try:
            yield Target("127.0.0.1", server.port, server.session_port, server.proc.pid, data_dir)
        finally:
            server.stop()
