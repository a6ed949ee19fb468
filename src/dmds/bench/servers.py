"""Servers under benchmark, as child processes: started on free loopback ports, stopped cleanly.

A `dmds serve` says which ports it bound in its `--ports-file` (`wait_for_ports`); other servers
(mosquitto, nats-server, the relay) in a line of their log (`start`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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


#: `python -c` shim that starts `dmds` asking the kernel for SIGKILL when the thread that started it
#: ends (prctl PR_SET_PDEATHSIG), so that no server outlives an aborted run.
DIE_WITH_PARENT = (
    "import ctypes, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "from dmds.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def spawn_dmds(
    flags: Sequence[str], log: Path, ports_file: Path, *, die_with_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start `dmds serve *flags --ports-file ports_file`, its output appended to `log`; then
    `wait_for_ports`. With `die_with_parent`, call it from the thread that will outlive it."""
    ports_file.unlink(missing_ok=True)
    entry = ["-c", DIE_WITH_PARENT] if die_with_parent else ["-m", "dmds.cli.main"]
    args = [sys.executable, *entry, "serve", *flags, "--ports-file", str(ports_file)]
    with log.open("ab") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)


def wait_for_ports(
    proc: subprocess.Popen[bytes], ports_file: Path, log: Path, timeout_s: float = START_TIMEOUT_S
) -> dict[str, int]:
    """The ports a `dmds serve --ports-file ports_file` bound (and its pid), once it wrote them.
    RuntimeError (with the log's end) if it exits first or takes longer than `timeout_s`; it is
    then killed. A stale file would be believed: `spawn_dmds` removes it first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            ports: dict[str, int] = json.loads(ports_file.read_text())
            return ports
        if proc.poll() is not None:
            raise RuntimeError(f"dmds serve exited {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"dmds serve did not start within {timeout_s} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, of its children that ended (reaped: cutime, cstime) and of those still
    running: PostgreSQL's postmaster and its backends."""
    from dmds.cluster.postgres import children  # noqa: PLC0415

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for child in children(pid):
        with contextlib.suppress(OSError):  # a backend that ended meanwhile
            total += cpu_seconds(child)
    return total


def _admin_flags() -> list[str]:
    """The admin port is off in benchmarks (its default port would clash between servers), unless
    DMDS_ADMIN_PORT says which port to use: how its cost is measured (docs/benchmarks.md)."""
    return [] if os.environ.get("DMDS_ADMIN_PORT") else ["--admin-port", "0"]


@dataclass
class Dmds:
    """A `dmds serve` on loopback with a data dir of its own."""

    proc: subprocess.Popen[bytes]
    port: int
    session_port: int

    @classmethod
    def start(cls, data_dir: Path, sync: str, *extra: str) -> Dmds:
        log, ports_file = data_dir.with_suffix(".log"), data_dir.with_suffix(".ports")
        flags = [
            "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), "--sync", sync,
            "--session-host", "127.0.0.1", "--session-port", "0",
            "--web-host", "127.0.0.1", "--web-port", "0", *_admin_flags(), *extra,
        ]  # fmt: skip
        proc = spawn_dmds(flags, log, ports_file)
        ports = wait_for_ports(proc, ports_file, log)
        return cls(proc, ports["classic"], ports["session"])

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Target:
    """Where a workload sends its load: a server the bench started (its pid known) or a running one;
    or the nodes of a cluster the bench started on one PostgreSQL."""

    host: str
    classic_port: int | None
    session_port: int | None
    pid: int | None  # None for a server the bench did not start: its CPU is not reported
    data_dir: Path | None
    #: every node's session port and pid (one entry without a cluster)
    session_ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    #: the PostgreSQL postmaster the bench started, whose CPU (and its backends') is reported
    database_pid: int | None = None

    def cpu(self) -> float | None:
        """The nodes' CPU, their helpers' (the SQLite store's WAL fsync process) included."""
        if self.pids:
            return sum(tree_cpu_seconds(pid) for pid in self.pids)
        return tree_cpu_seconds(self.pid) if self.pid is not None else None

    def database_cpu(self) -> float | None:
        return tree_cpu_seconds(self.database_pid) if self.database_pid is not None else None

    def node_port(self, i: int) -> int:
        """The session port of node `i` (modulo the number of nodes)."""
        ports = self.session_ports or [self.session_port or 0]
        return ports[i % len(ports)]


@contextmanager
def target(args: argparse.Namespace, sync: str, *extra: str, protocol: str | None = None) -> Iterator[Target]:
    """The server under test: `--host`/`--port` if given, else a `dmds serve` on a temporary data dir.

    With `--host`, `--port` is the port of the protocol under test (`protocol`, else `args.protocol`,
    else classic), by default that protocol's usual port."""
    if getattr(args, "store", None):
        with cluster_target(args, sync, *extra) as nodes:
            yield nodes
        return
    if args.host is not None:
        session = (protocol or getattr(args, "protocol", "classic")) == "session"
        port = args.port if args.port is not None else 7001 if session else 7000
        yield Target(args.host, None if session else port, port if session else None, None, None)
        return
    with tempfile.TemporaryDirectory(prefix="dmds-bench-", dir=args.data_dir) as tmp:
        data_dir = Path(tmp) / "data"
        server = Dmds.start(data_dir, sync, *extra)
        try:
            yield Target("127.0.0.1", server.port, server.session_port, server.proc.pid, data_dir)
        finally:
            server.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS, Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread alone: for dmds, its event loop (the store's committer
    and the password hashing run on other threads)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine spent busy so far (Linux /proc/stat): compared with the
    server's and the generator's, it shows what the kernel (loopback TCP in softirq) and other
    processes took."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is already in user


class Meter:
    """CPU over a phase: the server's (all threads and child processes, and its event loop alone)
    and the whole machine's."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._start = self._now()

    def _now(self) -> tuple[float | None, float | None, float]:
        if self.pid is None:
            return None, None, machine_busy_seconds()
        return tree_cpu_seconds(self.pid), main_thread_cpu_seconds(self.pid), machine_busy_seconds()

    def restart(self) -> None:
        self._start = self._now()

    def stop(self) -> tuple[float | None, dict[str, float | None]]:
        """(server CPU seconds, extras: its loop thread's CPU and the machine's busy CPU seconds)."""
        (cpu0, loop0, busy0), (cpu1, loop1, busy1) = self._start, self._now()
        server = cpu1 - cpu0 if cpu1 is not None and cpu0 is not None else None
        loop = loop1 - loop0 if loop1 is not None and loop0 is not None else None
        return server, {"server_loop_cpu_s": loop, "machine_busy_cpu_s": busy1 - busy0}


@contextmanager
def cluster_target(args: argparse.Namespace, sync: str, *extra: str) -> Iterator[Target]:
    """`--nodes` dmds nodes on a fresh database of `--store`: a PostgreSQL server URL on which the
    bench may create databases, or `local` for a throw-away server it starts (and measures)."""
    from dmds.bench import postgres  # noqa: PLC0415 - asyncpg and the cluster only when asked

    with (
        tempfile.TemporaryDirectory(prefix="dmds-bench-", dir=args.data_dir) as tmp,
        postgres.database(args.store, Path(tmp)) as (url, database),
    ):
        nodes = []
        try:
            for i in range(args.nodes):
                flags = ("--store", url, "--node-id", f"bench{i}", *extra)
                nodes.append(Dmds.start(Path(tmp) / f"node{i}", sync, *flags))
            yield Target(
                "127.0.0.1",
                nodes[0].port,
                nodes[0].session_port,
                nodes[0].proc.pid,
                None,
                session_ports=[n.session_port for n in nodes],
                pids=[n.proc.pid for n in nodes],
                database_pid=database.pid() if database is not None else None,
            )
        finally:
            for node in nodes:
                node.stop()


@contextmanager
def relay_target(args: argparse.Namespace) -> Iterator[Target]:
    """The minimal durable session relay (`relay.py`) on a temporary data dir."""
    with tempfile.TemporaryDirectory(prefix="dmds-bench-relay-", dir=args.data_dir) as tmp:
        data_dir = Path(tmp) / "data"
        command = [sys.executable, "-m", "dmds.bench.relay", str(data_dir)]
        proc, port = start(command, r"relay listening on [^ ]+:(\d+)", Path(tmp) / "relay.log")
        try:
            yield Target("127.0.0.1", None, port, proc.pid, data_dir)
        finally:
            stop(proc)
