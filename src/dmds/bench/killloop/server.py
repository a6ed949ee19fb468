"""The server under the kill loop: a `dmds serve` killed and started again on its data dir, and the waits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmds.bench import servers

HOST = "127.0.0.1"
PASSWORD = "chaos password"  # noqa: S105 - throwaway accounts on a throwaway data dir
BIRTH = "01/02/2000"

#: Settings of the server under the kill loop beyond the defaults. Cheap argon2: the accounts are
#: set up once and passwords are not what is tested. No send rate limit and room for every message
#: an offline recipient accumulates: a LIMIT_EXCEEDED would make the senders retry out of order.
KILL_SERVER_ARGS: tuple[str, ...] = (
    "--sync", "full", "--argon2-time-cost", "1", "--argon2-memory-kib", "64",
    "--max-send-rate", "0", "--max-stored-messages", "1000000",
    "--connect-timeout-s", "1", "--push-timeout-s", "2",
)  # fmt: skip

#: The drain after the load ends once nothing arrived for DRAIN_STALL_S, or after DRAIN_CAP_S.
DRAIN_STALL_S = 30.0
DRAIN_CAP_S = 900.0
#: How a classic client waits between two attempts while the server is away.
RETRY_S = 0.05
#: Bound on one classic request.
CLASSIC_TIMEOUT_S = 5.0


async def wait_until(condition: Callable[[], bool], timeout_s: float, period_s: float = 0.05) -> bool:
    """Wait until `condition()` holds (True) or `timeout_s` passes (False). Polled: what it waits
    for is set by other processes or by callbacks that know nothing of the waiter."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(period_s)
    return True


async def wait_progressing(
    condition: Callable[[], bool], progress: Callable[[], int], stall_s: float, cap_s: float
) -> bool:
    """Wait until `condition()` holds (True), for as long as `progress()` keeps changing: False after
    `stall_s` without a change, or after `cap_s` in all. A drain of tens of thousands of classic
    pushes (one connection each) takes minutes; a stuck one is seen in seconds."""
    began = changed = time.monotonic()
    last = progress()
    while not condition():
        now = time.monotonic()
        if now - changed >= stall_s or now - began >= cap_s:
            return False
        await asyncio.sleep(0.5)  # the condition may scan every arrival: not too often
        if (current := progress()) != last:
            last, changed = current, time.monotonic()
    return True


class ServerExited(RuntimeError):
    """`dmds serve` exited (or never said it was listening)."""


@dataclass
class ChaosServer:
    """A `dmds serve` child on loopback that can be killed and started again on the same data dir,
    on the same ports when they are free (else on new ones: `moved` counts those restarts)."""

    data_dir: Path
    log_path: Path
    extra: tuple[str, ...] = ()
    port: int = 0
    session_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    moved: int = 0
    #: a node of a cluster: each life joins as `<node>-<life>`, so that the users of a killed life
    #: are taken over by the other nodes (not by its successor) when its lease ends
    node: str = ""

    async def start(self) -> None:
        try:
            await self._start(self.port, self.session_port)
        except ServerExited:
            if not (self.port or self.session_port):
                raise
            self.moved += 1  # a port was taken meanwhile: the clients follow the new ones
            await self._start(0, 0)

    async def _start(self, port: int, session_port: int) -> None:
        flags = [
            "--host", HOST, "--port", str(port), "--data-dir", str(self.data_dir),
            "--session-host", HOST, "--session-port", str(session_port),
            "--web-host", HOST, "--web-port", "0", "--admin-port", "0", *self.extra,
        ]  # fmt: skip
        if self.node:
            flags += ["--node-id", f"{self.node}-{self.starts}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        ports_file = self.log_path.with_suffix(".ports")
        # Started from the loop's thread, not a worker thread: PR_SET_PDEATHSIG fires when the
        # *thread* that forked ends. A fork and exec is quick enough to block the loop for.
        self.proc = servers.spawn_dmds(flags, self.log_path, ports_file, die_with_parent=True)
        try:
            ports = await asyncio.to_thread(servers.wait_for_ports, self.proc, ports_file, self.log_path)
        except RuntimeError as exc:
            self.proc = None
            raise ServerExited(str(exc)) from exc
        self.port, self.session_port = ports["classic"], ports["session"]
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    async def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop); the exit code, None if not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.send_signal(signal.SIGTERM)
        if not await wait_until(lambda: proc.poll() is not None, timeout_s):
            proc.kill()
        return proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status_kib(self, field_name: str) -> int:
        """A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: the peak so far); 0 if
        the server is not running."""
        if self.proc is None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0
