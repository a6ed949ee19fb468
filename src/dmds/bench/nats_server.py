"""nats-server for `dmds bench send|queue --nats`: JetStream on file storage in a temporary directory,
with an fsync per message where the server can (`sync_interval: always`, 2.10 and later)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dmds.bench import servers

NATS_SERVER = "/usr/sbin/nats-server"  # Debian's package puts it in sbin, like Mosquitto


@dataclass(frozen=True)
class Server:
    """A nats-server this module started, with JetStream on file storage in a temporary directory."""

    host: str
    port: int
    pid: int
    version: str  # "2.9.10", or "" if unknown
    fsync_per_message: bool  # `sync_interval: always` (2.10 and later)
    data_dir: Path

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def system(self) -> str:
        name = f"NATS JetStream {self.version}" if self.version else "NATS JetStream"
        return f"{name} (file, {'fsync' if self.fsync_per_message else 'no fsync'} per message)"

    def cpu(self) -> float:
        return servers.cpu_seconds(self.pid)


def server_version(binary: str = NATS_SERVER) -> str:
    """The version `nats-server --version` prints ("nats-server: v2.9.10"), "" if it says none."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"v(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    return match.group(1) if match else ""


def _config(data_dir: Path, *, sync_always: bool) -> str:
    """Defaults but for loopback, a port of the server's choosing (read from its log: no race for a
    free port), and JetStream's store in `data_dir`. JSON strings are valid NATS config strings."""
    lines = [
        "host: 127.0.0.1",
        "port: -1",
        "jetstream {",
        f"  store_dir: {json.dumps(str(data_dir / 'store'))}",
        *(["  sync_interval: always"] if sync_always else []),
        "}",
    ]
    return "\n".join(lines) + "\n"


def sync_always_supported(binary: str, directory: Path) -> bool:
    """Whether this nats-server accepts `sync_interval: always` (an fsync per write): the config
    test (`-t`) fails on an unknown field, as 2.9 does on this one."""
    conf = directory / "probe.conf"
    conf.write_text(_config(directory, sync_always=True))
    out = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, timeout=10, check=False)
    return out.returncode == 0


@contextmanager
def nats_server(parent: Path | None = None) -> Iterator[Server]:
    """A nats-server on 127.0.0.1 with JetStream's file store in a temporary directory under
    `parent` (its log there too), stopped at the end."""
    if not os.access(NATS_SERVER, os.X_OK):
        raise RuntimeError(f"no nats-server at {NATS_SERVER}: install the Debian package (make system-deps)")
    version = server_version()
    with tempfile.TemporaryDirectory(prefix="dmds-bench-nats-", dir=parent) as tmp:
        data_dir = Path(tmp)
        sync_always = sync_always_supported(NATS_SERVER, data_dir)
        conf = data_dir / "nats-server.conf"
        conf.write_text(_config(data_dir, sync_always=sync_always))
        # "Server is ready" comes after JetStream is up; servers.start bounds the wait and raises
        # with the log if the line never comes.
        proc, port = servers.start(
            [NATS_SERVER, "-c", str(conf)],
            r"Listening for client connections on 127\.0\.0\.1:(\d+)(?s:.*)Server is ready",
            data_dir / "nats-server.log",
        )
        try:
            yield Server("127.0.0.1", port, proc.pid, version, sync_always, data_dir)
        finally:
            servers.stop(proc)
