"""Fixtures shared by every test: real `dmds serve` processes on 127.0.0.1 with a store in tmp_path."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
import trustme

from dmds.soap.service import SoapServer, make_server
from tests.pg import crashable_postgres, pg_url, postgres_server  # noqa: F401  (fixtures for every test)

#: `python -c` shim that starts `dmds` asking the kernel for SIGKILL when the test run dies
#: (prctl PR_SET_PDEATHSIG = 1), so that no server outlives an aborted run. Set in the child itself:
#: a preexec_fn is unsafe in a process with threads.
_DMDS = (
    "import ctypes, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "from dmds.cli.main import main; sys.exit(main(sys.argv[1:]))"
)

#: Short timeouts so that tests of stalls and dead listeners finish quickly.
FAST = ("--request-timeout-s", "2", "--connect-timeout-s", "1", "--push-timeout-s", "2")
_LISTENING = re.compile(r"classic server listening on [^ ]+:(\d+)")
_SESSION_LISTENING = re.compile(r"session server listening on [^ ]+:(\d+)")
_WEB_LISTENING = re.compile(r"over WebSocket at wss?://[^ ]+:(\d+)/session")
_ADMIN_LISTENING = re.compile(r"admin port listening on [^ ]+:(\d+) \(bearer token in (.+)\)")
#: Cheap password hashing: tests check behaviour, not argon2's cost.
CHEAP_ARGON2 = ("--argon2-time-cost", "1", "--argon2-memory-kib", "64")


@dataclass
class ServerProcess:
    """A real `dmds serve` child process. Its stderr goes to a file the test can read."""

    data_dir: Path
    log_path: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    session_port: int = 0
    web_port: int = 0
    #: with --admin-port N (off by default here: tests run many servers at once)
    admin_port: int = 0
    admin_token_path: Path | None = None

    def start(self, timeout_s: float = 20.0) -> ServerProcess:
        args = [
            sys.executable, "-c", _DMDS, "serve",
            "--host", "127.0.0.1", "--port", "0", "--data-dir", str(self.data_dir),
            "--session-host", "127.0.0.1", "--session-port", "0",
            "--web-host", "127.0.0.1", "--web-port", "0", "--admin-port", "0", *CHEAP_ARGON2, *self.extra,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match, session, web = (p.search(text) for p in (_LISTENING, _SESSION_LISTENING, _WEB_LISTENING))
            if match and session and web:
                self.port, self.session_port = int(match.group(1)), int(session.group(1))
                self.web_port = int(web.group(1))
                if self._admin_on():
                    admin = _ADMIN_LISTENING.search(text)
                    if admin is None:
                        time.sleep(0.02)  # logged just after the web port
                        continue
                    self.admin_port, self.admin_token_path = int(admin.group(1)), Path(admin.group(2))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"dmds serve exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"dmds serve did not start:\n{self.log()}")

    def _admin_on(self) -> bool:
        flags = self.extra
        return "--admin-port" in flags and flags[flags.index("--admin-port") + 1] != "0"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout_s)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class ServerFactory(Protocol):
    def __call__(self, *extra: str, data_dir: Path | None = None) -> ServerProcess: ...


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def make(*extra: str, data_dir: Path | None = None) -> ServerProcess:
        server = ServerProcess(
            data_dir or tmp_path / "data", tmp_path / f"server{len(started)}.log", list(extra)
        )
        started.append(server)
        return server.start()

    yield make
    for server in started:
        if server.proc is not None:
            server.stop(signal.SIGKILL)


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """A running server with the default settings but fast timeouts."""
    return server_factory(*FAST)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture
def soap() -> Iterator[SoapServer]:
    """The SOAP normaliser on a free loopback port, in a thread."""
    srv = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(timeout=5)
    srv.server_close()


@dataclass
class TlsServer:
    """A server speaking the session protocol over TLS, and a client context that trusts it."""

    server: ServerProcess
    context: ssl.SSLContext


@pytest.fixture
def tls_server(server_factory: ServerFactory, tmp_path: Path) -> TlsServer:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server = server_factory("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TlsServer(server, context)
