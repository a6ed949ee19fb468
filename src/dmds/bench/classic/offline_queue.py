"""`dmds bench queue --protocol classic`: messages stored for an offline recipient, then the drain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Barrier
from typing import Any

from dmds.bench import common, servers
from dmds.bench.classic import generator
from dmds.bench.classic.wire import Listener, ask
from dmds.protocols.classic import MessagePush, Push, ReceiptPush


@dataclass
class _Filled(generator.Tally):
    """A queue sender's tally: the ids its SENDs got, in order, with their texts."""

    sent: list[tuple[int, str]] = field(default_factory=list)
    receipts_end: float = 0.0
    fill_cpu_s: float = 0.0


async def _queue_sender(
    plan: generator.Plan, slot: int, alias: str, recipient: str, messages: int
) -> _Filled:
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

    listener: Listener | None = None
    try:
        async with asyncio.timeout(plan.left()):
            listener = await generator.join_user(plan.host, plan.port, alias, tally, on_receipt)
            await plan.wait(plan.ready)
            cpu, tally.start = common.own_cpu_seconds(children=False), time.perf_counter()
            for n in range(1, messages + 1 if listener is not None else 1):
                text = generator.message_text(alias, n)
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
            await generator.leave_user(plan.host, plan.port, alias, listener, tally)
    return tally


@dataclass
class _Drained(generator.Tally):
    """The recipient's tally: what it received, in order."""

    pushes: list[tuple[int, str, str]] = field(default_factory=list)
    server_cpu_s: float | None = None  # the server's, from CONNECT to the last push
    meter: dict[str, float | None] = field(default_factory=dict)


async def _queue_recipient(plan: generator.Plan, slot: int, alias: str, messages: int) -> _Drained:
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

    listener = Listener(on_push)
    connected = False
    try:
        async with asyncio.timeout(plan.left()):
            code = await ask(plan.host, plan.port, "REGISTER", "Bench Recipient", alias, "01/02/2000")
            if code != 0:
                tally.problem(f"REGISTER {alias}: code {code}")
            await listener.start()
            await plan.wait(plan.ready)
            await plan.wait(plan.filled)
            meter = servers.Meter(plan.pid)
            cpu, tally.start = common.own_cpu_seconds(children=False), time.perf_counter()
            code = await ask(plan.host, plan.port, "CONNECT", alias, str(listener.port))
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
            await generator.leave_user(plan.host, plan.port, alias, listener if connected else None, tally)
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
            barrier.wait(generator.SETUP_TIMEOUT_S)
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    return done


def _queue_once(args: argparse.Namespace, target: servers.Target, system: str) -> common.Run:
    assert target.classic_port is not None
    messages = args.messages
    tag = generator.run_tag()
    recipient = f"q{tag}"
    senders = generator.aliases(tag, "qs", min(generator.QUEUE_SENDERS, messages))
    shares = [messages // len(senders) + (i < messages % len(senders)) for i in range(len(senders))]
    # ready: every user registered (the senders connected); filled: every message stored.
    ready, filled = generator.FORK.Barrier(len(senders) + 2), generator.FORK.Barrier(len(senders) + 2)
    counts: SynchronizedArray[int] = generator.FORK.Array("q", len(senders) + 1, lock=False)
    plan = generator.Plan(
        target.host, target.classic_port, target.pid, time.perf_counter() + args.timeout, ready, filled,
        counts, generator.FORK.Value("i", 0),
    )  # fmt: skip
    out: multiprocessing.Queue[generator.Tally] = generator.FORK.Queue()

    def sender(i: int) -> Callable[[], Any]:
        return lambda: _queue_sender(plan, i, senders[i], recipient, shares[i])

    # The recipient first: it registers before the senders, whose SENDs need it to exist.
    procs = generator.start_processes(
        out, [lambda: _queue_recipient(plan, len(senders), recipient, messages)], plan
    )
    procs += generator.start_processes(out, [sender(i) for i in range(len(senders))], plan)
    found: list[str] = []
    fill_start = time.perf_counter()
    try:
        ready.wait(generator.SETUP_TIMEOUT_S)
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
        tallies = generator.collect(
            out,
            len(procs),
            plan.deadline,
            lambda: bar.update(bar.task_ids[0], completed=counts[len(senders)]),
        )
    generator.reap(procs)
    drained = next((t for t in tallies if isinstance(t, _Drained)), _Drained())
    filled_by = [t for t in tallies if isinstance(t, _Filled)]
    errors, problems = generator.merge(tallies, found + _check_queue(drained, filled_by, messages))
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
            "problems": problems[: generator.PROBLEMS_KEPT],
        },
    )


def run_queue(args: argparse.Namespace) -> common.Result:
    if getattr(args, "nodes", 1) > 1:
        raise SystemExit("the classic workloads run on one node; --nodes is for the session protocol")
    runs = []
    extra = ["--max-send-rate", "0", "--max-stored-messages", str(max(10000, args.messages))]
    for _ in range(args.runs):
        for target, system in generator.dmds_servers(args, *extra):
            runs.append(_queue_once(args, target, system))
    return common.Result(
        "classic-queue",
        {"messages": args.messages, "fill_processes": min(generator.QUEUE_SENDERS, args.messages)},
        runs,
        "messages stored for an offline recipient by several senders, each SEND answered 0; on CONNECT "
        "every message pushed once, in id order, with the text sent under that id; every sender got a "
        "receipt for each of its messages. Seconds: CONNECT to the last push",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )
