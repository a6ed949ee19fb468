"""Classic-protocol workloads: REGISTER rate, SEND end to end through real push listeners, a queue drain.

`dmds bench register`: N client processes register new users back to back, one connection per
request, against the trivial baseline (`dmds.bench.baseline`) and then dmds in each sync mode, side
by side in each repetition; the ratio to that repetition's baseline is the figure.

`dmds bench send --protocol classic`: sender/recipient pairs, each user with a real push listener
(the server dials back, one connection per item, classic.md). Every sender sends its messages one
after another, one connection per SEND as the protocol is; the run ends when every message reached
its recipient's listener and every delivery receipt reached its sender's. Latency is from the start
of a SEND to the arrival of its push.

`dmds bench queue --protocol classic`: messages stored for an offline recipient by several sender
processes, then the recipient CONNECTs and the drain is timed up to the last push.

Every run checks what it measures: no error code, every message once, in order, with its text, and
every receipt (dmds sends one for every delivered message, stored or not: classic.md, Semantics).
The generator runs in forked processes, each an uvloop loop speaking the protocol over
asyncio.Protocol, so that its cost stays small next to the server's; both CPUs are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import uvloop

from dmds.bench import common, servers
from dmds.protocols.classic import MessagePush, Push, PushReader, ReceiptPush, RemoteProtocolError

BASELINE = "baseline (uvloop, answers at once)"
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

_ctx = multiprocessing.get_context("fork")


def _fields(*parts: str) -> bytes:
    return b"".join(part.encode() + b"\0" for part in parts)


def _system(sync: str) -> str:
    return f"dmds --sync {sync}"


def _syncs(args: argparse.Namespace, default: list[str]) -> list[str]:
    return list(args.sync) if args.sync else default


def _target_name(args: argparse.Namespace) -> str:
    return f"server at {args.host}:{args.port if args.port is not None else 7000}"


# -- REGISTER -----------------------------------------------------------------------------------------


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
    out: multiprocessing.Queue[tuple[int, int]] = _ctx.Queue()
    procs = [
        _ctx.Process(target=_register_worker, args=(port, i, seconds, out, host)) for i in range(clients)
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
    syncs = _syncs(args, ["full", "normal"])
    for _ in range(args.runs):
        if args.host is not None:
            port = args.port if args.port is not None else 7000
            runs.append(_register_run(_target_name(args), port, None, args, args.host))
            continue
        with _baseline(args.data_dir) as (port, pid):
            base = _register_run(BASELINE, port, pid, args, "127.0.0.1")
        runs.append(base)
        for sync in syncs:
            with servers.target(args, sync) as target:
                assert target.classic_port is not None
                assert target.pid is not None
                run = _register_run(_system(sync), target.classic_port, target.pid, args, target.host)
            run.extra["ratio"] = run.rate / base.rate if base.rate > 0 else 0.0
            runs.append(run)
    return common.Result(
        "register",
        {"clients": args.clients, "seconds": args.seconds, "syncs": syncs if args.host is None else []},
        runs,
        "every REGISTER answered 0 (a new alias each time), one TCP connection per request",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )


# -- the generator's protocol pieces ------------------------------------------------------------------


class _Exchange(asyncio.Protocol):
    """One classic request: write it, collect the reply until the server closes."""

    __slots__ = ("_buf", "_done", "_payload")

    def __init__(self, payload: bytes, done: asyncio.Future[bytes]) -> None:
        self._payload = payload
        self._done = done
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._payload)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._buf += data

    def eof_received(self) -> bool | None:
        if not self._done.done():
            self._done.set_result(self._buf)
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            if exc is not None:
                self._done.set_exception(exc)
            else:
                self._done.set_result(self._buf)


async def _exchange(host: str, port: int, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    await loop.create_connection(lambda: _Exchange(payload, done), host, port)
    return await done


async def _ask(host: str, port: int, *parts: str) -> int:
    """A request whose reply is a code alone (REGISTER, CONNECT, DISCONNECT): the code, -1 if garbled."""
    reply = await _exchange(host, port, _fields(*parts))
    return int(reply[:-1]) if reply.endswith(b"\0") and reply[:-1].isdigit() else -1


def _send_reply(reply: bytes) -> tuple[int, int]:
    """(code, id) of a SEND reply: a code field, then 4 raw id bytes (classic.md)."""
    if len(reply) != 6 or reply[1:2] != b"\0" or not reply[:1].isdigit():
        return -1, 0
    return int(reply[:1]), int.from_bytes(reply[2:], "big")


#: What a listener hands over: the push (None for a dial-back that carried none) and when it
#: was complete (perf_counter).
OnPush = Callable[[Push | None, float], None]


class _PushConnection(asyncio.Protocol):
    __slots__ = ("_finished", "_index", "_listener", "_reader")

    def __init__(self, listener: _Listener, index: int) -> None:
        self._listener = listener
        self._index = index
        self._reader = PushReader(256, 1 << 20)
        self._finished = False

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        self._reader.receive_data(data)
        self._parse()

    def _parse(self) -> None:
        try:
            push = self._reader.next_event()
        except RemoteProtocolError:  # counted as a dial-back without a push
            self._finish(None)
            return
        if push is not None:
            self._finish(push)

    def _finish(self, push: Push | None) -> None:
        self._finished = True
        self._listener.arrived(self._index, push, time.perf_counter())

    def eof_received(self) -> bool | None:
        if not self._finished:
            self._reader.receive_data(b"")
            self._parse()
            if not self._finished:
                self._finish(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished:
            self._finish(None)


class _Listener:
    """A client's push listener on 127.0.0.1: hands pushes over in the order their connections were
    accepted, which is the order the server's courier sent them (it opens the next dial-back only
    once the previous item was written)."""

    def __init__(self, on_push: OnPush) -> None:
        self._on_push = on_push
        self._accepted = 0
        self._next = 0
        self._early: dict[int, tuple[Push | None, float]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            self._connection, "127.0.0.1", 0, backlog=512
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _connection(self) -> _PushConnection:
        conn = _PushConnection(self, self._accepted)
        self._accepted += 1
        return conn

    def arrived(self, index: int, push: Push | None, at: float) -> None:
        if index != self._next:
            self._early[index] = (push, at)
            return
        self._on_push(push, at)
        self._next += 1
        while self._next in self._early:
            self._on_push(*self._early.pop(self._next))
            self._next += 1

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


@dataclass
class _Tally:
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


async def _user(host: str, port: int, alias: str, tally: _Tally, on_push: OnPush) -> _Listener | None:
    """REGISTER `alias`, open its listener and CONNECT it; None (and a problem) if refused."""
    code = await _ask(host, port, "REGISTER", "Bench User", alias, "01/02/2000")
    if code != 0:
        tally.problem(f"REGISTER {alias}: code {code}")
        return None
    listener = _Listener(on_push)
    await listener.start()
    code = await _ask(host, port, "CONNECT", alias, str(listener.port))
    if code != 0:
        tally.problem(f"CONNECT {alias}: code {code}")
        listener.close()
        return None
    return listener


async def _leave(host: str, port: int, alias: str, listener: _Listener | None, tally: _Tally) -> None:
    if listener is None:
        return
    with contextlib.suppress(OSError):
        code = await _ask(host, port, "DISCONNECT", alias)
        if code != 0:
            tally.problem(f"DISCONNECT {alias}: code {code}")
    listener.close()


def _text(sender: str, n: int) -> str:
    return f"message {n} from {sender}"


def _aliases(run_tag: str, role: str, count: int) -> list[str]:
    return [f"{role}{run_tag}-{i}" for i in range(count)]


def _run_tag() -> str:
    # Aliases unique per run, so that a running server (--host) can be benched repeatedly.
    return f"{os.getpid() % 100000}x{time.time_ns() % 10**9}"


@dataclass(frozen=True)
class _Plan:
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
        return _send_reply(await _exchange(self.host, self.port, _fields("SEND", sender, recipient, text)))


def _worker(out: multiprocessing.Queue[_Tally], job: Callable[[], Any], plan: _Plan) -> None:
    """A generator process: run `job` on uvloop, hand its tally (or its failure) back."""
    try:
        tally = uvloop.run(job())
    except BaseException as exc:  # noqa: BLE001 - the parent must hear of it, not wait for the timeout
        tally = _Tally()
        tally.problem(f"generator process failed: {exc!r}")
        plan.finish()
    out.put(tally)


def _start(out: multiprocessing.Queue[_Tally], jobs: list[Callable[[], Any]], plan: _Plan) -> list[Any]:
    procs = [_ctx.Process(target=_worker, args=(out, job, plan)) for job in jobs]
    for p in procs:
        p.start()
    return procs


def _collect(
    out: multiprocessing.Queue[_Tally], expected: int, deadline: float, on_tick: Callable[[], None]
) -> list[_Tally]:
    """Tallies from `expected` processes, or what came before the deadline (the rest count as failed)."""
    tallies: list[_Tally] = []
    while len(tallies) < expected and time.perf_counter() < deadline + 15:
        with contextlib.suppress(queue.Empty):
            tallies.append(out.get(timeout=0.1))
        on_tick()
    for _ in range(expected - len(tallies)):
        lost = _Tally()
        lost.problem("a generator process never reported")
        tallies.append(lost)
    return tallies


def _reap(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        p.join(15)
        if p.is_alive():
            p.kill()
            p.join()


def _merge(tallies: Sequence[_Tally], found: list[str]) -> tuple[int, list[str]]:
    """Errors counted by the processes plus what the parent `found`; examples of both."""
    return sum(t.errors for t in tallies) + len(found), found + [p for t in tallies for p in t.problems]


# -- SEND, pairs end to end ---------------------------------------------------------------------------


class _Pair:
    """One sender and its recipient in a generator process: the checks of their traffic."""

    def __init__(
        self, sender: str, recipient: str, messages: int, tally: _Tally, on_done: Callable[[], None]
    ) -> None:
        self.sender = sender
        self.recipient = recipient
        self.messages = messages
        self.tally = tally
        self._on_done = on_done
        self.sent_at = [0.0] * (messages + 1)
        self.next_push = 1
        self.receipts = bytearray(messages + 1)
        self.receipt_count = 0

    def done(self) -> bool:
        return self.next_push > self.messages and self.receipt_count == self.messages

    def on_message(self, push: Push | None, at: float) -> None:
        n = self.next_push
        if not isinstance(push, MessagePush):
            self.tally.problem(f"{self.recipient}: push {n}: {push!r} is not a message")
            return
        # A fresh recipient: its n-th accepted message has id n, and arrives n-th.
        if push.message_id != n or push.sender != self.sender or push.text != _text(self.sender, n):
            self.tally.problem(f"{self.recipient}: expected message {n}, got {push!r}")
            return
        self.next_push += 1
        self.tally.delivered += 1
        self.tally.latencies.append(at - self.sent_at[n])
        if self.done():
            self._on_done()

    def on_receipt(self, push: Push | None, at: float) -> None:
        if not isinstance(push, ReceiptPush) or not 1 <= push.message_id <= self.messages:
            self.tally.problem(f"{self.sender}: unexpected push {push!r}")
            return
        if self.receipts[push.message_id]:
            self.tally.problem(f"{self.sender}: receipt {push.message_id} twice")
            return
        self.receipts[push.message_id] = 1
        self.receipt_count += 1
        self.tally.receipts += 1
        if self.done():
            self._on_done()

    async def send_all(self, plan: _Plan, slot: int) -> None:
        """One SEND after another, each on its own connection, as the protocol is."""
        for n in range(1, self.messages + 1):
            text = _text(self.sender, n)
            self.sent_at[n] = time.perf_counter()
            try:
                code, mid = await plan.send(self.sender, self.recipient, text)
            except OSError as exc:
                self.tally.problem(f"SEND {n} from {self.sender}: {exc}")
                continue
            self.tally.replies.append(time.perf_counter() - self.sent_at[n])
            if code != 0 or mid != n:
                self.tally.problem(f"SEND {n} from {self.sender}: code {code}, id {mid}")
            plan.counts[slot] += 1


async def _send_process(plan: _Plan, slot: int, pairs: list[tuple[str, str]], messages: int) -> _Tally:
    tally = _Tally()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    remaining = len(pairs)

    def pair_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not finished.done():
            finished.set_result(None)

    work = [_Pair(s, r, messages, tally, pair_done) for s, r in pairs]
    users: list[tuple[str, _Listener | None]] = []
    try:
        async with asyncio.timeout(plan.left()):
            for pair in work:
                for alias, on_push in ((pair.recipient, pair.on_message), (pair.sender, pair.on_receipt)):
                    users.append((alias, await _user(plan.host, plan.port, alias, tally, on_push)))
            await plan.wait(plan.ready)
            cpu, tally.start = common.own_cpu_seconds(children=False), time.perf_counter()
            if tally.errors == 0:
                await asyncio.gather(*(pair.send_all(plan, slot) for pair in work))
                await finished
            tally.end, tally.cpu_s = time.perf_counter(), common.own_cpu_seconds(children=False) - cpu
    except TimeoutError:
        tally.end = time.perf_counter()
        for pair in work:
            if not pair.done():
                tally.problem(
                    f"{pair.sender}->{pair.recipient}: timed out with {pair.next_push - 1} messages and "
                    f"{pair.receipt_count} receipts of {messages}"
                )
    plan.finish()
    for alias, listener in users:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await _leave(plan.host, plan.port, alias, listener, tally)
    return tally


def _send_once(args: argparse.Namespace, target: servers.Target, system: str) -> common.Run:
    assert target.classic_port is not None
    pairs, messages = args.pairs or 8, args.messages or 1000
    tag = _run_tag()
    all_pairs = list(zip(_aliases(tag, "s", pairs), _aliases(tag, "r", pairs), strict=True))
    groups = [all_pairs[i : i + PAIRS_PER_PROCESS] for i in range(0, pairs, PAIRS_PER_PROCESS)]
    counts: SynchronizedArray[int] = _ctx.Array("q", len(groups), lock=False)
    ready = _ctx.Barrier(len(groups) + 1)
    plan = _Plan(
        target.host, target.classic_port, target.pid, time.perf_counter() + args.timeout, ready, None,
        counts, _ctx.Value("i", 0),
    )  # fmt: skip
    out: multiprocessing.Queue[_Tally] = _ctx.Queue()

    def job(group: list[tuple[str, str]], slot: int) -> Callable[[], Any]:
        return lambda: _send_process(plan, slot, group, messages)

    procs = _start(out, [job(g, i) for i, g in enumerate(groups)], plan)
    found: list[str] = []
    try:
        ready.wait(SETUP_TIMEOUT_S)
    except threading.BrokenBarrierError:  # the processes say why in their tallies
        found.append("the generator processes did not all get ready")
    meter = servers.Meter(target.pid)
    with common.progress(f"send {system}", pairs * messages) as bar:
        # The server's CPU up to the moment every process has its last receipt, not its goodbyes.
        while plan.finished.value < len(procs) and time.perf_counter() < plan.deadline + 15:
            bar.update(bar.task_ids[0], completed=sum(counts[:]))
            time.sleep(0.01)
        server_cpu, extra = meter.stop()
        tallies = _collect(out, len(procs), plan.deadline, lambda: None)
    _reap(procs)

    started = [t.start for t in tallies if t.start]
    ended = [t.end for t in tallies if t.end]
    delivered = sum(t.delivered for t in tallies)
    receipts = sum(t.receipts for t in tallies)
    if delivered != pairs * messages or receipts != pairs * messages:
        found.append(f"{delivered} messages and {receipts} receipts arrived of {pairs * messages}")
    errors, problems = _merge(tallies, found)
    return common.Run(
        system,
        delivered,
        max(ended) - min(started) if started and ended else 0.0,
        server_cpu,
        sum(t.cpu_s for t in tallies),
        errors,
        common.percentiles([x for t in tallies for x in t.latencies]),
        {
            **extra,
            "receipts": receipts,
            "processes": len(procs),
            "send_reply_ms": common.percentiles([x for t in tallies for x in t.replies]),
            "problems": problems[:PROBLEMS_KEPT],
        },
    )


def _servers(args: argparse.Namespace, *extra: str) -> Iterator[tuple[servers.Target, str]]:
    """The servers of one repetition: a started one per sync mode, or the one at --host."""
    if args.host is not None:
        with servers.target(args, "full") as target:
            yield target, _target_name(args)
        return
    for sync in _syncs(args, ["full"]):
        with servers.target(args, sync, *extra) as target:
            yield target, _system(sync)


def run_send(args: argparse.Namespace) -> common.Result:
    if getattr(args, "nodes", 1) > 1:
        raise SystemExit("the classic workloads run on one node; --nodes is for the session protocol")
    runs = []
    for _ in range(args.runs):
        for target, system in _servers(args, "--max-send-rate", "0"):
            runs.append(_send_once(args, target, system))
    return common.Result(
        "classic-send",
        {
            "pairs": args.pairs or 8,
            "messages_per_pair": args.messages or 1000,
            "pairs_per_process": PAIRS_PER_PROCESS,
        },
        runs,
        "no error code; every message pushed to its recipient's listener once, in order, with its id "
        "and text; a delivery receipt for every message at its sender's listener, once. Latency: SEND "
        "start to push at the recipient's listener; rate: messages until the last receipt",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )


# -- a queue for an offline recipient, then the drain -------------------------------------------------


@dataclass
class _Filled(_Tally):
    """A queue sender's tally: the ids its SENDs got, in order, with their texts."""

    sent: list[tuple[int, str]] = field(default_factory=list)
    receipts_end: float = 0.0
    fill_cpu_s: float = 0.0


async def _queue_sender(plan: _Plan, slot: int, alias: str, recipient: str, messages: int) -> _Filled:
    tally = _Filled()
    loop = asyncio.get_running_loop()
    all_receipts = loop.create_future()
    seen: set[int] = set()

    def on_receipt(push: Push | None, at: float) -> None:
        if not isinstance(push, ReceiptPush) or push.message_id in seen:
            tally.problem(f"{alias}: unexpected or repeated push {push!r}")
            return
        seen.add(push.message_id)
        tally.receipts += 1
        if tally.receipts == messages and not all_receipts.done():
            tally.receipts_end = at
            all_receipts.set_result(None)

    listener: _Listener | None = None
    try:
        async with asyncio.timeout(plan.left()):
            listener = await _user(plan.host, plan.port, alias, tally, on_receipt)
            await plan.wait(plan.ready)
            cpu, tally.start = common.own_cpu_seconds(children=False), time.perf_counter()
            for n in range(1, messages + 1 if listener is not None else 1):
                text = _text(alias, n)
                code, mid = await plan.send(alias, recipient, text)
                if code != 0:
                    tally.problem(f"SEND {n} from {alias}: code {code}")
                tally.sent.append((mid, text))
                plan.counts[slot] += 1
            tally.fill_cpu_s = common.own_cpu_seconds(children=False) - cpu
            await plan.wait(plan.filled)
            cpu = common.own_cpu_seconds(children=False)  # from here on: handling the receipts of the drain
            if listener is not None:
                await all_receipts
            tally.end, tally.cpu_s = time.perf_counter(), common.own_cpu_seconds(children=False) - cpu
    except TimeoutError:
        tally.problem(f"{alias}: timed out with {tally.receipts} receipts of {messages}")
    if seen - {mid for mid, _ in tally.sent}:
        tally.problem(f"{alias}: receipts for messages it did not send")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await _leave(plan.host, plan.port, alias, listener, tally)
    return tally


@dataclass
class _Drained(_Tally):
    """The recipient's tally: what it received, in order."""

    pushes: list[tuple[int, str, str]] = field(default_factory=list)
    server_cpu_s: float | None = None  # the server's, from CONNECT to the last push
    meter: dict[str, float | None] = field(default_factory=dict)


async def _queue_recipient(plan: _Plan, slot: int, alias: str, messages: int) -> _Drained:
    tally = _Drained()
    all_in = asyncio.get_running_loop().create_future()

    def on_push(push: Push | None, at: float) -> None:
        if not isinstance(push, MessagePush):
            tally.problem(f"{alias}: push {push!r} is not a message")
            return
        tally.pushes.append((push.message_id, push.sender, push.text))
        tally.delivered += 1
        plan.counts[slot] = tally.delivered
        if tally.delivered == messages and not all_in.done():
            tally.end = at
            all_in.set_result(None)

    listener = _Listener(on_push)
    connected = False
    try:
        async with asyncio.timeout(plan.left()):
            code = await _ask(plan.host, plan.port, "REGISTER", "Bench Recipient", alias, "01/02/2000")
            if code != 0:
                tally.problem(f"REGISTER {alias}: code {code}")
            await listener.start()
            await plan.wait(plan.ready)
            await plan.wait(plan.filled)
            meter = servers.Meter(plan.pid)
            cpu, tally.start = common.own_cpu_seconds(children=False), time.perf_counter()
            code = await _ask(plan.host, plan.port, "CONNECT", alias, str(listener.port))
            connected = code == 0
            if not connected:
                tally.problem(f"CONNECT {alias}: code {code}")
            else:
                await all_in
            tally.cpu_s = common.own_cpu_seconds(children=False) - cpu
            tally.server_cpu_s, tally.meter = meter.stop()
    except TimeoutError:
        tally.problem(f"{alias}: timed out with {tally.delivered} messages of {messages}")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await _leave(plan.host, plan.port, alias, listener if connected else None, tally)
    listener.close()
    return tally


def _check_queue(recipient: _Drained, senders: list[_Filled], messages: int) -> list[str]:
    """Every message once, in id order, with the text its SEND was answered for; sends in order."""
    problems = []
    accepted = {mid: text for s in senders for mid, text in s.sent}
    for s in senders:
        ids = [mid for mid, _ in s.sent]
        if ids != sorted(ids):
            problems.append("a sender's ids are not increasing")
    if sorted(accepted) != list(range(1, messages + 1)):
        problems.append(f"SEND ids are not 1..{messages}")
    got = [mid for mid, _, _ in recipient.pushes]
    if got != list(range(1, messages + 1)):
        problems.append(f"pushes not 1..{messages} in order, once each ({len(got)} arrived)")
    wrong = sum(1 for mid, _, text in recipient.pushes if accepted.get(mid) != text)
    if wrong:
        problems.append(f"{wrong} pushes with a text not the one sent under their id")
    receipts = sum(s.receipts for s in senders)
    if receipts != messages:
        problems.append(f"{receipts} receipts arrived of {messages}")
    return problems


def _wait_in_thread(barrier: Barrier) -> threading.Event:
    """The parent's own wait at `barrier`, in a thread so that its progress bar keeps moving."""
    done = threading.Event()

    def wait() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(SETUP_TIMEOUT_S)
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    return done


def _queue_once(args: argparse.Namespace, target: servers.Target, system: str) -> common.Run:
    assert target.classic_port is not None
    messages = args.messages
    tag = _run_tag()
    recipient = f"q{tag}"
    senders = _aliases(tag, "qs", min(QUEUE_SENDERS, messages))
    shares = [messages // len(senders) + (i < messages % len(senders)) for i in range(len(senders))]
    # ready: every user registered (the senders connected); filled: every message stored.
    ready, filled = _ctx.Barrier(len(senders) + 2), _ctx.Barrier(len(senders) + 2)
    counts: SynchronizedArray[int] = _ctx.Array("q", len(senders) + 1, lock=False)
    plan = _Plan(
        target.host, target.classic_port, target.pid, time.perf_counter() + args.timeout, ready, filled,
        counts, _ctx.Value("i", 0),
    )  # fmt: skip
    out: multiprocessing.Queue[_Tally] = _ctx.Queue()

    def sender(i: int) -> Callable[[], Any]:
        return lambda: _queue_sender(plan, i, senders[i], recipient, shares[i])

    # The recipient first: it registers before the senders, whose SENDs need it to exist.
    procs = _start(out, [lambda: _queue_recipient(plan, len(senders), recipient, messages)], plan)
    procs += _start(out, [sender(i) for i in range(len(senders))], plan)
    found: list[str] = []
    fill_start = time.perf_counter()
    try:
        ready.wait(SETUP_TIMEOUT_S)
    except threading.BrokenBarrierError:
        found.append("the generator processes did not all get ready")
    fill_start, meter = time.perf_counter(), servers.Meter(target.pid)
    with common.progress(f"queue {system}: fill", messages) as bar:
        stored = _wait_in_thread(filled)
        while not stored.wait(0.1) and time.perf_counter() < plan.deadline:
            bar.update(bar.task_ids[0], completed=sum(counts[: len(senders)]))
    fill_seconds = time.perf_counter() - fill_start
    fill_server_cpu, _ = meter.stop()
    with common.progress(f"queue {system}: drain", messages) as bar:
        tallies = _collect(
            out,
            len(procs),
            plan.deadline,
            lambda: bar.update(bar.task_ids[0], completed=counts[len(senders)]),
        )
    _reap(procs)
    drained = next((t for t in tallies if isinstance(t, _Drained)), _Drained())
    filled_by = [t for t in tallies if isinstance(t, _Filled)]
    errors, problems = _merge(tallies, found + _check_queue(drained, filled_by, messages))
    receipts_end = max((t.receipts_end for t in filled_by), default=0.0)
    return common.Run(
        system,
        drained.delivered,
        drained.end - drained.start if drained.end else 0.0,
        drained.server_cpu_s,
        drained.cpu_s + sum(t.cpu_s for t in filled_by),
        errors,
        None,
        {
            **drained.meter,
            "fill_seconds": fill_seconds,
            "fill_rate": messages / fill_seconds if fill_seconds > 0 else 0.0,
            "fill_server_cpu_s": fill_server_cpu,
            "fill_generator_cpu_s": sum(t.fill_cpu_s for t in filled_by),
            "fill_processes": len(senders),
            "receipts": sum(t.receipts for t in filled_by),
            "receipts_seconds": receipts_end - drained.start if receipts_end and drained.start else None,
            "problems": problems[:PROBLEMS_KEPT],
        },
    )


def run_queue(args: argparse.Namespace) -> common.Result:
    if getattr(args, "nodes", 1) > 1:
        raise SystemExit("the classic workloads run on one node; --nodes is for the session protocol")
    runs = []
    extra = ["--max-send-rate", "0", "--max-stored-messages", str(max(10000, args.messages))]
    for _ in range(args.runs):
        for target, system in _servers(args, *extra):
            runs.append(_queue_once(args, target, system))
    return common.Result(
        "classic-queue",
        {"messages": args.messages, "fill_processes": min(QUEUE_SENDERS, args.messages)},
        runs,
        "messages stored for an offline recipient by several senders, each SEND answered 0; on CONNECT "
        "every message pushed once, in id order, with the text sent under that id; every sender got a "
        "receipt for each of its messages. Seconds: CONNECT to the last push",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )
