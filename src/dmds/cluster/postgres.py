"""A throw-away PostgreSQL server on loopback, for tests, benchmarks and `dmds cluster`.

initdb into a fresh directory, a free 127.0.0.1 port, no Unix socket, trust authentication (only
loopback can reach it). PostgreSQL refuses to run as root, so as root every server command runs as
the ``postgres`` user (`runuser`), in a directory of its own under the system's temp dir that that
user can reach (pytest's tmp_path, for one, is private to root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: the account the server runs as when we are root
SERVER_USER = "postgres"


class PostgresError(RuntimeError):
    """The server's programs are missing, or it did not start; the message says which and why."""


def find_bin_dir() -> Path:
    """The directory of initdb and pg_ctl: $DMDS_PG_BIN, else Debian's newest, else $PATH."""
    env = os.environ.get("DMDS_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise PostgresError(
        "PostgreSQL's initdb and pg_ctl were not found (set DMDS_PG_BIN, or install Debian's "
        "postgresql package: `make system-deps` does as root)"
    )


def _version(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return 0.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL cluster, started by `start`, stopped (and its files removed) by `stop`.

    `base_dir` holds it when we are not root; as root it lives in its own temp directory.
    `kill` and `restart` crash it and bring it back on the same port, for failure tests."""

    def __init__(self, base_dir: Path | None = None, port: int = 0, *, start_timeout_s: float = 60.0):
        self._as_root = os.geteuid() == 0
        self._owned = base_dir is None or self._as_root
        root = Path(tempfile.mkdtemp(prefix="dmds-pg-")) if self._owned else base_dir
        assert root is not None
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._bin = find_bin_dir()
        self._running = False

    # -- the server's life ------------------------------------------------------------------

    def start(self) -> LocalPostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(3):
            port = self.port or free_port()
            try:
                options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
                timeout = str(int(self.start_timeout_s))
                self._pg_ctl("start", "-w", "-t", timeout, "-l", str(self.log_path), "-o", options)
            except PostgresError:
                if self.port or attempt == 2:  # a fixed port is not ours to change
                    raise
                continue  # the free port was taken meanwhile
            self.port = port
            self._running = True
            return self
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash, recovered from by the next start."""
        pid = self.pid()
        if pid is None:
            return
        victims = [pid, *children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.01)
        # A dead postmaster not yet reaped (a container's init may be slow to) still answers
        # kill(pid, 0), and the next start would take it for a running server.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._running = False

    def restart(self) -> None:
        """Start again on the same port, after `kill` (crash recovery) or a stop."""
        if self._running:
            self._pg_ctl("stop", "-w", "-m", "fast")
            self._running = False
        self.start()

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files if they are in our temp dir."""
        if self._running:
            try:
                self._pg_ctl("stop", "-w", "-m", "fast")
            except PostgresError:
                self.kill()
            self._running = False
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (``name`` is an SQL identifier of ours); returns its URL."""
        self._psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- plumbing ---------------------------------------------------------------------------

    def _initdb(self) -> None:
        if self._as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
            self.root.chmod(0o700)
        self._run(self._bin / "initdb", "-D", str(self.data_dir), "-U", SERVER_USER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")  # fmt: skip

    def _pg_ctl(self, *args: str) -> None:
        self._run(self._bin / "pg_ctl", "-D", str(self.data_dir), *args)

    def _psql(self, sql: str) -> None:
        psql = self._bin / "psql"
        self._run(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(), "-c", sql, as_server=False)

    def _run(self, program: Path, *args: str, as_server: bool = True) -> None:
        cmd = [str(program), *args]
        if as_server and self._as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            tail = self.log()[-2000:]
            raise PostgresError(
                f"{program.name} {' '.join(args[:3])}... exited {done.returncode}: "
                f"{done.stderr.strip() or done.stdout.strip()}" + (f"\nserver log:\n{tail}" if tail else "")
            )


def children(pid: int) -> list[int]:
    """Direct children of `pid` (PostgreSQL's backends and auxiliary processes), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
