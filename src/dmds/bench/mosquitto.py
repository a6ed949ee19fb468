"""Mosquitto for `dmds bench mqtt` and `--mqtt`: started on a free loopback port with its persistence
in a temporary directory, or one already running."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dmds.bench import servers

MOSQUITTO = "/usr/sbin/mosquitto"
#: Ports tried when the free port picked for Mosquitto is taken before it binds it.
START_ATTEMPTS = 3
#: Messages Mosquitto keeps for an offline subscriber, at least (its default, 1000, drops the rest).
MAX_QUEUED = 1_000_000


@dataclass(frozen=True)
class Broker:
    """An MQTT broker to bench: one this module started (pid known) or a running one."""

    host: str
    port: int
    pid: int | None  # None for a broker the bench did not start: its CPU is not reported
    version: str  # "2.0.11", or "" if unknown
    data_dir: Path | None = None  # the started broker's persistence directory, where fsync is timed

    @property
    def system(self) -> str:
        name = f"mosquitto {self.version}" if self.version else f"mqtt {self.host}:{self.port}"
        return f"{name} (QoS 1, persistent session)"

    def cpu(self) -> float | None:
        return servers.cpu_seconds(self.pid) if self.pid is not None else None


def mosquitto_version(binary: str = MOSQUITTO) -> str:
    """The version `mosquitto -h` prints ("mosquitto version 2.0.11"), "" if it says none."""
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(port: int, data_dir: Path, max_queued: int) -> str:
    """Mosquitto's defaults but for what the workloads need. Nagle's algorithm stays on (the
    default; `set_tcp_nodelay true` measured 10-15% faster on send here): what a deployment gets."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        # The whole offline queue must fit: the default (1000) would drop messages.
        f"max_queued_messages {max_queued}",
        "max_queued_bytes 0",
        # No limit on QoS-1 messages in flight to the subscriber: the publisher's window governs.
        "max_inflight_messages 0",
        # Its log goes to a file in the temp dir (servers.start), where the listening line is read.
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot write the temp dir
    return "\n".join(lines) + "\n"


@contextmanager
def mosquitto(parent: Path | None = None, max_queued: int = MAX_QUEUED) -> Iterator[Broker]:
    """A Mosquitto on 127.0.0.1 with its persistence in a temporary directory under `parent`, which
    keeps up to `max_queued` messages for an offline subscriber."""
    if not os.access(MOSQUITTO, os.X_OK):
        raise RuntimeError(f"no Mosquitto at {MOSQUITTO}: install the Debian package (make system-deps)")
    version = mosquitto_version()
    with tempfile.TemporaryDirectory(prefix="dmds-bench-mqtt-", dir=parent) as tmp:
        data_dir = Path(tmp)
        for attempt in range(START_ATTEMPTS):
            port = _free_port()
            conf = data_dir / "mosquitto.conf"
            conf.write_text(_config(port, data_dir, max_queued))
            try:
                proc, _ = servers.start(
                    [MOSQUITTO, "-c", str(conf)],
                    rf"Opening ipv4 listen socket on port ({port})\b",
                    data_dir / f"mosquitto-{attempt}.log",
                )
                break
            except RuntimeError:  # the port was taken in between: another one
                if attempt == START_ATTEMPTS - 1:
                    raise
        try:
            yield Broker("127.0.0.1", port, proc.pid, version, data_dir)
        finally:
            servers.stop(proc)


@contextmanager
def broker_for(args: argparse.Namespace) -> Iterator[Broker]:
    """`--host`/`--port` if given (port 1883 by default), else a Mosquitto started for the bench."""
    if args.host is not None:
        yield Broker(args.host, args.port if args.port is not None else 1883, None, "")
        return
    with mosquitto(args.data_dir, max(MAX_QUEUED, args.messages)) as broker:
        yield broker
