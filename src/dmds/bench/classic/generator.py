"""The generator processes of the classic workloads: what they share (`Plan`), what each measured
(`Tally`), their users, and how the parent starts, collects and reaps them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from multiprocessing.synchronize import Barrier
from typing import Any

import uvloop

from dmds.bench import servers
from dmds.bench.classic.wire import Listener, OnPush, ask, exchange, fields, send_reply

#: Pairs driven by one generator process (its closed loops interleave on one event loop). Eight pairs
#: in 1, 2, 4 or 8 processes on the 2-core machine: no difference above the noise; 4 per process
#: keeps the process count at the core count and spares context switches.
PAIRS_PER_PROCESS = 4
#: Processes that fill the queue of the offline recipient.
QUEUE_SENDERS = 4
#: Seconds the generator processes have to register and connect their users.
SETUP_TIMEOUT_S = 60.0
#: Problems kept in a Run's extra, as examples; `errors` counts them all.
PROBLEMS_KEPT = 10

FORK = multiprocessing.get_context("fork")


def system_name(sync: str) -> str:
    return f"dmds --sync {sync}"


def sync_modes(args: argparse.Namespace, default: list[str]) -> list[str]:
    return list(args.sync) if args.sync else default


def target_name(args: argparse.Namespace) -> str:
    return f"server at {args.host}:{args.port if args.port is not None else 7000}"


@dataclass
class Tally:
    """What one generator process measured and found wrong."""

    problems: list[str] = field(default_factory=list)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    replies: list[float] = field(default_factory=list)  # SEND round trips
    delivered: int = 0
    receipts: int = 0
    start: float = 0.0
    end: float = 0.0
    cpu_s: float = 0.0

    def problem(self, text: str) -> None:
        self.errors += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(text)


async def join_user(host: str, port: int, alias: str, tally: Tally, on_push: OnPush) -> Listener | None:
    """REGISTER `alias`, open its listener and CONNECT it; None (and a problem) if refused."""
    code = await ask(host, port, "REGISTER", "Bench User", alias, "01/02/2000")
    if code != 0:
        tally.problem(f"REGISTER {alias}: code {code}")
        return None
    listener = Listener(on_push)
    await listener.start()
    code = await ask(host, port, "CONNECT", alias, str(listener.port))
    if code != 0:
        tally.problem(f"CONNECT {alias}: code {code}")
        listener.close()
        return None
    return listener


async def leave_user(host: str, port: int, alias: str, listener: Listener | None, tally: Tally) -> None:
    if listener is None:
        return
    with contextlib.suppress(OSError):
        code = await ask(host, port, "DISCONNECT", alias)
        if code != 0:
            tally.problem(f"DISCONNECT {alias}: code {code}")
    listener.close()


def message_text(sender: str, n: int) -> str:
    return f"message {n} from {sender}"


def aliases(run_tag: str, role: str, count: int) -> list[str]:
    return [f"{role}{run_tag}-{i}" for i in range(count)]


def run_tag() -> str:
    # Aliases unique per run, so that a running server (--host) can be benched repeatedly.
    return f"{os.getpid() % 100000}x{time.time_ns() % 10**9}"


@dataclass(frozen=True)
class Plan:
    """What the generator processes of a run share: the server, the deadline (perf_counter: the same
    clock in every process), the barriers the phases start on, and the progress counters."""

    host: str
    port: int
    pid: int | None  # the server's, if the bench started it
    deadline: float
    ready: Barrier
    filled: Barrier | None
    counts: SynchronizedArray[int]
    finished: Synchronized[int]  # processes done measuring

    def finish(self) -> None:
        with self.finished.get_lock():
            self.finished.value += 1

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    async def wait(self, barrier: Barrier | None) -> None:
        if barrier is not None:  # in a thread: the loop keeps serving the listeners meanwhile
            await asyncio.get_running_loop().run_in_executor(None, barrier.wait, SETUP_TIMEOUT_S)

    async def send(self, sender: str, recipient: str, text: str) -> tuple[int, int]:
        return send_reply(await exchange(self.host, self.port, fields("SEND", sender, recipient, text)))


def worker(out: multiprocessing.Queue[Tally], job: Callable[[], Any], plan: Plan) -> None:
    """A generator process: run `job` on uvloop, hand its tally (or its failure) back."""
    try:
        tally = uvloop.run(job())
    except BaseException as exc:  # noqa: BLE001 - the parent must hear of it, not wait for the timeout
        tally = Tally()
        tally.problem(f"generator process failed: {exc!r}")
        plan.finish()
    out.put(tally)


def start_processes(
    out: multiprocessing.Queue[Tally], jobs: list[Callable[[], Any]], plan: Plan
) -> list[Any]:
    procs = [FORK.Process(target=worker, args=(out, job, plan)) for job in jobs]
    for p in procs:
        p.start()
    return procs


def collect(
    out: multiprocessing.Queue[Tally], expected: int, deadline: float, on_tick: Callable[[], None]
) -> list[Tally]:
    """Tallies from `expected` processes, or what came before the deadline (the rest count as failed)."""
    tallies: list[Tally] = []
    while len(tallies) < expected and time.perf_counter() < deadline + 15:
        with contextlib.suppress(queue.Empty):
            tallies.append(out.get(timeout=0.1))
        on_tick()
    for _ in range(expected - len(tallies)):
        lost = Tally()
        lost.problem("a generator process never reported")
        tallies.append(lost)
    return tallies


def reap(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        p.join(15)
        if p.is_alive():
            p.kill()
            p.join()


def merge(tallies: Sequence[Tally], found: list[str]) -> tuple[int, list[str]]:
    """Errors counted by the processes plus what the parent `found`; examples of both."""
    return sum(t.errors for t in tallies) + len(found), found + [p for t in tallies for p in t.problems]


def dmds_servers(args: argparse.Namespace, *extra: str) -> Iterator[tuple[servers.Target, str]]:
    """The servers of one repetition: a started one per sync mode, or the one at --host."""
    if args.host is not None:
        with servers.target(args, "full") as target:
            yield target, target_name(args)
        return
    for sync in sync_modes(args, ["full"]):
        with servers.target(args, sync, *extra) as target:
            yield target, system_name(sync)
