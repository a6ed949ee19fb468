"""Fixtures shared by every test: real `dmds serve` processes on 127.0.0.1 with a store in tmp_path."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
import trustme

from dmds.admin.token import TOKEN_NAME
from dmds.bench.servers import spawn_dmds, wait_for_ports
from dmds.soap.service import SoapServer, make_server
from tests.pg import crashable_postgres, pg_url, postgres_server  # noqa: F401  (fixtures for every test)

#: Short timeouts so that tests of stalls and dead listeners finish quickly.
FAST = ("--request-timeout-s", "2", "--connect-timeout-s", "1", "--push-timeout-s", "2")
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
        flags = [
            "--host", "127.0.0.1", "--port", "0", "--data-dir", str(self.data_dir),
            "--session-host", "127.0.0.1", "--session-port", "0",
            "--web-host", "127.0.0.1", "--web-port", "0", "--admin-port", "0", *CHEAP_ARGON2, *self.extra,
        ]  # fmt: skip
        ports_file = self.log_path.with_suffix(".ports")
        # Asks the kernel for SIGKILL when the test run dies, so that no server outlives it.
        self.proc = spawn_dmds(flags, self.log_path, ports_file, die_with_parent=True)
        ports = wait_for_ports(self.proc, ports_file, self.log_path, timeout_s)
        self.port, self.session_port, self.web_port = ports["classic"], ports["session"], ports["web"]
        if "admin" in ports:
            self.admin_port, self.admin_token_path = ports["admin"], self._admin_token_path()
        return self

    def _admin_token_path(self) -> Path:
        flags = self.extra
        if "--admin-token-file" in flags:
            return Path(flags[flags.index("--admin-token-file") + 1])
        return self.data_dir / TOKEN_NAME

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


#: Starts of a server whose picked admin port another socket took meanwhile, before giving up.
ADMIN_PORT_TRIES = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerFactory(Protocol):
    def __call__(self, *extra: str, data_dir: Path | None = None) -> ServerProcess: ...


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def make(*extra: str, data_dir: Path | None = None) -> ServerProcess:
        flags = list(extra)

        def start() -> ServerProcess:
            server = ServerProcess(
                data_dir or tmp_path / "data", tmp_path / f"server{len(started)}.log", list(flags)
            )
            started.append(server)
            return server.start()

        for _ in range(ADMIN_PORT_TRIES - 1):
            try:
                return start()
            except RuntimeError as exc:
                # A test's admin port (it cannot be 0) is picked free, but it is free when picked,
                # not when the server binds it: another socket on port 0 may get it in between.
                if "(admin port): [Errno 98]" not in str(exc):
                    raise
                flags[flags.index("--admin-port") + 1] = str(_free_port())
        return start()

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
