"""`dmds bench send --protocol classic`: sender/recipient pairs end to end through real push listeners."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from dmds.bench import common, servers
from dmds.bench.classic import generator
from dmds.bench.classic.wire import Listener
from dmds.protocols.classic import MessagePush, Push, ReceiptPush


class _Pair:
    """One sender and its recipient in a generator process: the checks of their traffic."""

    def __init__(
        self, sender: str, recipient: str, messages: int, tally: generator.Tally, on_done: Callable[[], None]
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
        if (
            push.message_id != n
            or push.sender != self.sender
            or push.text != generator.message_text(self.sender, n)
        ):
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

    async def send_all(self, plan: generator.Plan, slot: int) -> None:
        """One SEND after another, each on its own connection, as the protocol is."""
        for n in range(1, self.messages + 1):
            text = generator.message_text(self.sender, n)
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


async def _send_process(
    plan: generator.Plan, slot: int, pairs: list[tuple[str, str]], messages: int
) -> generator.Tally:
    tally = generator.Tally()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    remaining = len(pairs)

    def pair_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not finished.done():
            finished.set_result(None)

    work = [_Pair(s, r, messages, tally, pair_done) for s, r in pairs]
    users: list[tuple[str, Listener | None]] = []
    try:
        async with asyncio.timeout(plan.left()):
            for pair in work:
                for alias, on_push in ((pair.recipient, pair.on_message), (pair.sender, pair.on_receipt)):
                    users.append(
                        (alias, await generator.join_user(plan.host, plan.port, alias, tally, on_push))
                    )
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
                await generator.leave_user(plan.host, plan.port, alias, listener, tally)
    return tally


def _send_once(args: argparse.Namespace, target: servers.Target, system: str) -> common.Run:
    assert target.classic_port is not None
    pairs, messages = args.pairs or 8, args.messages or 1000
    tag = generator.run_tag()
    all_pairs = list(zip(generator.aliases(tag, "s", pairs), generator.aliases(tag, "r", pairs), strict=True))
    groups = [
        all_pairs[i : i + generator.PAIRS_PER_PROCESS] for i in range(0, pairs, generator.PAIRS_PER_PROCESS)
    ]
    counts: SynchronizedArray[int] = generator.FORK.Array("q", len(groups), lock=False)
    ready = generator.FORK.Barrier(len(groups) + 1)
    plan = generator.Plan(
        target.host, target.classic_port, target.pid, time.perf_counter() + args.timeout, ready, None,
        counts, generator.FORK.Value("i", 0),
    )  # fmt: skip
    out: multiprocessing.Queue[generator.Tally] = generator.FORK.Queue()

    def job(group: list[tuple[str, str]], slot: int) -> Callable[[], Any]:
        return lambda: _send_process(plan, slot, group, messages)

    procs = generator.start_processes(out, [job(g, i) for i, g in enumerate(groups)], plan)
    found: list[str] = []
    try:
        ready.wait(generator.SETUP_TIMEOUT_S)
    except threading.BrokenBarrierError:  # the processes say why in their tallies
        found.append("the generator processes did not all get ready")
    meter = servers.Meter(target.pid)
    with common.progress(f"send {system}", pairs * messages) as bar:
        # The server's CPU up to the moment every process has its last receipt, not its goodbyes.
        while plan.finished.value < len(procs) and time.perf_counter() < plan.deadline + 15:
            bar.update(bar.task_ids[0], completed=sum(counts[:]))
            time.sleep(0.01)
        server_cpu, extra = meter.stop()
        tallies = generator.collect(out, len(procs), plan.deadline, lambda: None)
    generator.reap(procs)

    started = [t.start for t in tallies if t.start]
    ended = [t.end for t in tallies if t.end]
    delivered = sum(t.delivered for t in tallies)
    receipts = sum(t.receipts for t in tallies)
    if delivered != pairs * messages or receipts != pairs * messages:
        found.append(f"{delivered} messages and {receipts} receipts arrived of {pairs * messages}")
    errors, problems = generator.merge(tallies, found)
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
            "problems": problems[: generator.PROBLEMS_KEPT],
        },
    )


def run_send(args: argparse.Namespace) -> common.Result:
    if getattr(args, "nodes", 1) > 1:
        raise SystemExit("the classic workloads run on one node; --nodes is for the session protocol")
    runs = []
    for _ in range(args.runs):
        for target, system in generator.dmds_servers(args, "--max-send-rate", "0"):
            runs.append(_send_once(args, target, system))
    return common.Result(
        "classic-send",
        {
            "pairs": args.pairs or 8,
            "messages_per_pair": args.messages or 1000,
            "pairs_per_process": generator.PAIRS_PER_PROCESS,
        },
        runs,
        "no error code; every message pushed to its recipient's listener once, in order, with its id "
        "and text; a delivery receipt for every message at its sender's listener, once. Latency: SEND "
        "start to push at the recipient's listener; rate: messages until the last receipt",
        fsync_ms=common.fsync_ms(args.data_dir) if args.host is None else None,
    )
