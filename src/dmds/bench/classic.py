"""Classic-protocol load: N client processes doing one request per connection, back to back.

`dmds bench register` starts the trivial baseline server and dmds (with each sync mode asked for),
one after the other on this machine, drives each with the same client processes for the same time,
and prints requests per second and the ratio to the baseline.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dmds.bench import servers


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _register_worker(
    port: int, worker: int, seconds: float, out: multiprocessing.Queue[tuple[int, int]]
) -> None:
    done = errors = 0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        payload = b"REGISTER\0Bench User\0w%d-%d-%d\x0001/02/2000\0" % (worker, os.getpid(), n)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(payload)
                reply = b""
                while chunk := sock.recv(64):
                    reply += chunk
        except OSError:
            errors += 1
            continue
        if reply == b"0\0":
            done += 1
        else:
            errors += 1
    out.put((done, errors))


def drive_register(name: str, port: int, clients: int, seconds: float) -> Result:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    procs = [ctx.Process(target=_register_worker, args=(port, i, seconds, out)) for i in range(clients)]
    start = time.monotonic()
    for p in procs:
        p.start()
    totals = [out.get(timeout=seconds + 60) for _ in procs]
    elapsed = time.monotonic() - start
    for p in procs:
        p.join(10)
    return Result(name, sum(t[0] for t in totals), sum(t[1] for t in totals), elapsed)


def bench_register(clients: int, seconds: float, syncs: list[str]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dmds-bench-") as tmp:
        base = Path(tmp)
        proc, port = servers.start(
            [sys.executable, "-m", "dmds.bench.baseline"], r"^(\d+)$", base / "baseline.log"
        )
        try:
            results.append(drive_register("baseline (uvloop, answers at once)", port, clients, seconds))
        finally:
            servers.stop(proc)
        for sync in syncs:
            server = servers.Dmds.start(base / f"data-{sync}", sync)
            try:
                results.append(drive_register(f"dmds serve --sync {sync}", server.port, clients, seconds))
            finally:
                server.stop()
    return results


def report(results: list[Result], clients: int, seconds: float) -> str:
    base = results[0].rate
    lines = [
        f"REGISTER, {clients} client processes, {seconds:g} s each, one request per connection",
        f"{'server':40} {'requests':>9} {'errors':>6} {'req/s':>9} {'ratio':>6}",
    ]
    for r in results:
        lines.append(f"{r.name:40} {r.requests:9d} {r.errors:6d} {r.rate:9.0f} {r.rate / base:6.2f}")
    return "\n".join(lines)
