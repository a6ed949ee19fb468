"""`dmds bench register`: REGISTER back to back from N client processes, beside the trivial baseline."""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import queue
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dmds.bench import common, servers
from dmds.bench.classic.generator import (
    FORK,
    sync_modes,
    system_name,
    target_name,
)

BASELINE = "baseline (uvloop, answers at once)"


def _register_worker(
    port: int, worker: int, seconds: float, out: multiprocessing.Queue[tuple[int, int]], host: str
) -> None:
    done = errors = 0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        payload = b"REGISTER\0Bench User\0w%d-%d-%d\x0001/02/2000\0" % (worker, os.getpid(), n)
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
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


@dataclass(frozen=True)
class _Drive:
    done: int
    errors: int
    seconds: float
    generator_cpu_s: float


def drive_register(port: int, clients: int, seconds: float, host: str = "127.0.0.1") -> _Drive:
    """`clients` processes registering for `seconds`; their CPU is counted once they are joined."""
    out: multiprocessing.Queue[tuple[int, int]] = FORK.Queue()
    procs = [
        FORK.Process(target=_register_worker, args=(port, i, seconds, out, host)) for i in range(clients)
    ]
    cpu = common.own_cpu_seconds(me=False)
    start = time.monotonic()
    for p in procs:
        p.start()
    totals: list[tuple[int, int]] = []
    with common.progress("register", math.ceil(seconds * 10)) as bar:
        while len(totals) < len(procs):
            with contextlib.suppress(queue.Empty):
                totals.append(out.get(timeout=0.1))
            bar.update(bar.task_ids[0], completed=min(seconds, time.monotonic() - start) * 10)
            if time.monotonic() - start > seconds + 60:
                break
    elapsed = time.monotonic() - start
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    missing = len(procs) - len(totals)
    return _Drive(
        sum(t[0] for t in totals),
        sum(t[1] for t in totals) + missing,
        elapsed,
        common.own_cpu_seconds(me=False) - cpu,
    )


@contextlib.contextmanager
def _baseline(data_dir: Path | None) -> Iterator[tuple[int, int]]:
    """The trivial server: (port, pid)."""
    with tempfile.TemporaryDirectory(prefix="dmds-bench-", dir=data_dir) as tmp:
        proc, port = servers.start(
            [sys.executable, "-m", "dmds.bench.baseline"], r"^(\d+)$", Path(tmp) / "baseline.log"
        )
        try:
            yield port, proc.pid
        finally:
            servers.stop(proc)


def _register_run(system: str, port: int, pid: int | None, args: argparse.Namespace, host: str) -> common.Run:
    meter = servers.Meter(pid)
    drive = drive_register(port, args.clients, args.seconds, host)
    server_cpu, extra = meter.stop()
    return common.Run(
        system, drive.done, drive.seconds, server_cpu, drive.generator_cpu_s, drive.errors, None, extra
    )


def run_register(args: argparse.Namespace) -> common.Result:
    runs: list[common.Run] = []
    syncs = sync_modes(args, ["full", "normal"])
    for _ in range(args.runs):
        if args.host is not None:
            port = args.port if args.port is not None else 7000
            runs.append(_register_run(target_name(args), port, None, args, args.host))
            continue
        with _baseline(args.data_dir) as (port, pid):
            base = _register_run(BASELINE, port, pid, args, "127.0.0.1")
        runs.append(base)
        for sync in syncs:
            with servers.target(args, sync) as target:
                assert target.classic_port is not None
                assert target.pid is not None
                run = _register_run(system_name(sync), target.classic_port, target.pid, args, target.host)
            run.extra["ratio"] = run.rate / base.rate if base.rate > 0 else 0.0
            runs.append(run)
    return common.Result(
        "register",
        {"clients": args.clients, "seconds": args.seconds, "syncs": syncs if args.host is None else []},
        runs,
        "every REGISTER answered 0 (a new alias each time), one TCP connection per request",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )
