"""The flood of `dmds bench chaos`: thousands of hostile connections on the classic and session ports
while a well-behaved session pair and a classic pair exchange messages; the pairs' messages must all
arrive (in order, exactly once, with their receipts), the server must stay up, and its resident
memory must stay under a bound computed from its limits.

The hostile connections
-----------------------
`BEHAVIOURS` lists them. Each connection picks one at random (seeded), at most `concurrency` are open
at once, and each lives at most `hold_s` seconds (the server's timeouts are set shorter, so they
fire): random bytes; a request or frame stopped half-way (before Hello, and after Hello in a frame
announced at `max_frame_bytes`); a length prefix of 4 GiB; lots of requests whose answers are never
read (anonymous: Pings and refused History; logged in with a token: Subscribe and History pages of a
real conversation); wrong passwords for the pair's alias and others; connect and close (or reset) at
once.

The memory bound
----------------
Per connection, the server keeps at most (settings in brackets):
- input that is not yet a whole request: a classic request [max_text_bytes + 4 x max_field_bytes]
  or a session frame [max_frame_bytes], and never more than the connection sent;
- output not read: [max_outgoing_bytes], then the connection is cut (and less if it asked for less);
- its objects (transport, codec, buffers): `CONNECTION_OVERHEAD` (about 3 KiB measured; 64 KiB
  counted).
Answers are built before they are written, whether or not the asker is still there: reads run in the
store's batches of [max_batch] jobs, so about two batches of answers are alive at once
(`answers_being_built_bytes`, with the size of the History pages this flood asks for; the limits
alone allow max_frame_bytes per answer). Argon2 hashes of wrong passwords run on the default
executor, `ARGON2_THREADS` at a time, each with [argon2_memory_kib].

The bound is the RSS before the flood, plus the sum over behaviours of (most connections of that
behaviour open at once) x (its worst case above), plus the answers being built, the argon2 buffers,
and `SLACK` for the allocator. It is checked against VmHWM (the kernel's record of the peak) and
against VmRSS after the flood.

History pages of long texts and the delay pipelined reads impose on everyone else, which this flood
found, are tested on their own (tests/reliability/test_history_abuse.py). The WebSocket listener is
not flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dmds.bench.common import percentiles
from dmds.bench.hostile import (
    BEHAVIOURS,
    HOSTILE_ACCOUNTS,
    MAX_UNREAD_LOGGED_IN,
    Tally,
    Target,
    answers_being_built_bytes,
    run_hostile,
    worst_case_bytes,
)
from dmds.bench.killloop import (
    ChaosServer,
    ClassicRecipient,
    ClassicSender,
    ClassicUser,
    Ledger,
    RecipientLog,
    SenderLog,
    SessionRecipient,
    SessionSender,
    SessionUser,
    cancel_and_close,
    check,
    fence_and_drain,
)

KIB, MIB = 1024, 1024 * 1024
#: Server memory per open connection beyond what it buffers (measured: about 3 KiB per idle session).
CONNECTION_OVERHEAD = 64 * KIB
#: Threads of the server's default executor, where argon2 runs: asyncio's min(32, cores + 4).
ARGON2_THREADS = min(32, (os.cpu_count() or 1) + 4)
#: Allocator and interpreter noise on top of the bound.
SLACK = 32 * MIB
#: Messages between hostile accounts, so that their History pages are real pages.
HOSTILE_MESSAGES = 300


@dataclass
class FloodConfig:
    connections: int
    seed: int
    workdir: Path
    concurrency: int = 1000  # hostile connections open at once, at most
    hold_s: float = 8.0  # a hostile connection's life, at most
    cheap_argon2: bool = False  # tests: cheap hashes; the bench: the defaults, as deployed
    pair_pace_s: float = 0.005  # the pairs' pause between two sends
    behaviours: tuple[str, ...] = ()  # a subset of BEHAVIOURS (default: all)
    time_limit_s: float = 900.0
    on_connection: Callable[[], None] | None = None

    def server_args(self) -> tuple[str, ...]:
        # The server's timeouts fire within a hostile connection's life: stalls are cut by the
        # server, not by the flood giving up.
        short = max(0.5, self.hold_s / 4)
        idle = max(1.0, self.hold_s / 2)
        args: tuple[str, ...] = (
            "--sync", "full", "--request-timeout-s", f"{short:g}", "--linger-s", f"{short:g}",
            "--linger-idle-s", f"{short:g}",
            "--handshake-timeout-s", f"{short:g}", "--idle-timeout-s", f"{idle:g}",
            "--heartbeat-s", f"{idle / 2:g}",
        )  # fmt: skip
        if self.cheap_argon2:
            args += ("--argon2-time-cost", "1", "--argon2-memory-kib", "64")
        return args


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (the servers this starts inherit it); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _sample_rss(server: ChaosServer, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(server.status_kib("VmRSS"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


@dataclass
class _Pairs:
    """The well-behaved pairs (a session one, a classic one) and the accounts around them."""

    ledger: Ledger
    s_sender: SessionSender
    c_sender: ClassicSender
    s_recipient: SessionRecipient
    c_recipient: ClassicRecipient
    fence: SessionUser
    hostile: list[SessionUser]

    @classmethod
    def on(cls, server: ChaosServer, seed: int) -> _Pairs:
        pair_to = [RecipientLog("pair-b", "session", "online"), RecipientLog("cpair-b", "classic", "online")]
        pair_from = [SenderLog("pair-a", "session", "pair-b"), SenderLog("cpair-a", "classic", "cpair-b")]
        ledger = Ledger(pair_from, pair_to)
        return cls(
            ledger,
            SessionSender(server, ledger, pair_from[0], window=2),
            ClassicSender(server, ledger, pair_from[1]),
            SessionRecipient(server, ledger, pair_to[0], random.Random(seed)),
            ClassicRecipient(server, pair_to[1]),
            SessionUser(server, ledger, "fence"),
            [SessionUser(server, ledger, f"h-{i}") for i in range(HOSTILE_ACCOUNTS)],
        )

    @property
    def session_users(self) -> list[SessionUser]:
        return [self.s_sender, self.s_recipient, self.fence, *self.hostile]

    @property
    def classic_users(self) -> list[ClassicUser]:
        return [self.c_sender, self.c_recipient]


async def _set_up(server: ChaosServer, pairs: _Pairs, deadline: float) -> Target:
    """Every account registered and logged in, a real conversation between the hostile accounts
    (for their History requests); what the hostile connections will aim at."""
    for user in pairs.session_users:
        await user.register()
    for c_user in pairs.classic_users:
        await c_user.register()
    for user in pairs.session_users:
        await user.open(deadline)  # password logins now: the flood's wrong passwords will
        # rate-limit this address, and every later login is by token
    hostile = pairs.hostile
    for i, user in enumerate(hostile):
        assert user.client is not None
        peer = f"h-{(i + 1) % HOSTILE_ACCOUNTS}"
        await asyncio.gather(
            *(user.client.send(peer, f"hostile {n} " + "x" * 64) for n in range(HOSTILE_MESSAGES))
        )
    assert hostile[-1].client is not None
    page = await hostile[-1].client.history("h-0", limit=500)
    target = Target(
        server,
        [u.token for u in hostile],
        len(msgspec.msgpack.encode(page)),
        asyncio.Semaphore(MAX_UNREAD_LOGGED_IN),
    )
    for user in hostile:
        await user.close()  # the flood resumes their tokens
    await pairs.fence.close()
    return target


async def _hostile_connections(
    cfg: FloodConfig, rng: random.Random, target: Target, tally: Tally, deadline: float
) -> float:
    """`cfg.connections` hostile connections, at most `cfg.concurrency` at once; their seconds."""
    flood_started = time.monotonic()
    slots = asyncio.Semaphore(cfg.concurrency)
    names = list(cfg.behaviours or BEHAVIOURS)
    running: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        slots.release()
        if cfg.on_connection is not None:
            cfg.on_connection()

    for _ in range(cfg.connections):
        await slots.acquire()
        if time.monotonic() > deadline:
            slots.release()
            break
        name = rng.choice(names)
        task = asyncio.create_task(run_hostile(name, random.Random(rng.random()), target, cfg.hold_s, tally))
        running.add(task)
        task.add_done_callback(finished)
    if running:
        await asyncio.gather(*running)
    return time.monotonic() - flood_started


async def _wind_down(
    pairs: _Pairs, tasks: list[asyncio.Task[None]], server: ChaosServer
) -> tuple[bool, int | None]:
    """Every task cancelled, every client closed, the server stopped: (alive until then, exit code)."""
    await cancel_and_close(tasks, [*pairs.session_users, *pairs.classic_users])
    alive_at_end = server.alive()
    return alive_at_end, await server.stop()


@dataclass
class _Bound:
    """The memory bound of the module docstring: its parts in bytes, its total in KiB."""

    per_behaviour: dict[str, int]
    building: int
    argon2_kib: int
    kib: int

    @classmethod
    def of(cls, cfg: FloodConfig, tally: Tally, target: Target, base_kib: int) -> _Bound:
        per_behaviour = {
            name: tally.peak_open[name]
            * (worst_case_bytes(name, tally.max_sent[name], target) + CONNECTION_OVERHEAD)
            for name in BEHAVIOURS
        }
        argon2_kib = 64 if cfg.cheap_argon2 else 65536
        building = (
            answers_being_built_bytes(target) if tally.peak_open["session never read, logged in"] else 0
        )
        bound_kib = (
            base_kib + (sum(per_behaviour.values()) + building + SLACK) // KIB + ARGON2_THREADS * argon2_kib
        )
        return cls(per_behaviour, building, argon2_kib, bound_kib)

    def parts_kib(self) -> dict[str, int]:
        return {
            **{n: v // KIB for n, v in self.per_behaviour.items() if v},
            "answers being built": self.building // KIB,
            "argon2": ARGON2_THREADS * self.argon2_kib,
            "slack": SLACK // KIB,
        }


async def flood(cfg: FloodConfig) -> dict[str, Any]:
    """Run the flood; returns its counts, the memory figures and bound, and `ok`."""
    fd_limit = raise_fd_limit()
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    deadline = started + cfg.time_limit_s
    server = ChaosServer(cfg.workdir / "data", cfg.workdir / "server.log", cfg.server_args())
    await server.start()
    pairs = _Pairs.on(server, cfg.seed)
    ledger = pairs.ledger
    stop, idle = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    tally = Tally()
    rss: list[int] = []
    sampling = asyncio.Event()
    try:
        target = await _set_up(server, pairs, deadline)
        # The pairs, before, during and after the flood (ledger.lives: 0, 1, 2).
        tasks.append(asyncio.create_task(pairs.s_sender.run(stop, 10**6, deadline, pace_s=cfg.pair_pace_s)))
        tasks.append(asyncio.create_task(pairs.c_sender.run(stop, 10**6, pace_s=cfg.pair_pace_s)))
        tasks.append(asyncio.create_task(pairs.c_recipient.keep_connected(idle)))
        await asyncio.sleep(1.0)
        base_kib = server.status_kib("VmRSS")
        sampler = asyncio.create_task(_sample_rss(server, rss, sampling))
        ledger.new_life()
        flood_s = await _hostile_connections(cfg, rng, target, tally, deadline)
        ledger.new_life()
        alive_after_flood = server.alive()
        await asyncio.sleep(2.0)  # the pairs go on: the server is back to normal
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks[:2]), 60)
        tasks.append(asyncio.create_task(pairs.c_sender.keep_connected(idle)))
        fences = await fence_and_drain(pairs.fence, ledger.recipients, ledger, time.monotonic() + 30)
        await asyncio.sleep(1.0)
        after_kib = server.status_kib("VmRSS")
        peak_kib = server.status_kib("VmHWM")
        sampling.set()
        await sampler
        verdict = check(ledger, fences)
    finally:
        stop.set()
        idle.set()
        sampling.set()
        alive_at_end, exit_code = await _wind_down(pairs, tasks, server)
    bound = _Bound.of(cfg, tally, target, base_kib)
    counts: dict[str, Any] = {
        "seed": cfg.seed,
        "hostile_connections": sum(tally.outcomes.values()),
        "hostile_outcomes": {f"{n}: {o}": c for (n, o), c in sorted(tally.outcomes.items())},
        "hostile_peak_open": dict(tally.peak_open),
        "flood_seconds": round(flood_s, 1),
        "pair_acknowledged_before": ledger.lives[0],
        "pair_acknowledged_during": ledger.lives[1],
        "pair_acknowledged_after": ledger.lives[2],
        "pair_reconnections": ledger.reconnections,
        "pair_clients_replaced": ledger.replaced_clients,
        "pair_session_latency_ms": {
            phase: percentiles(ledger.latencies[i]) for i, phase in enumerate(("before", "during", "after"))
        },
        **verdict.counts,
        "server_alive_after_flood": alive_after_flood,
        "server_alive_at_end": alive_at_end,
        "server_exit_code": exit_code,
        "rss_before_kib": base_kib,
        "rss_peak_kib": peak_kib,
        "rss_peak_sampled_kib": max(rss, default=0),
        "rss_after_kib": after_kib,
        "rss_bound_kib": bound.kib,
        "rss_bound_parts_kib": bound.parts_kib(),
        "fd_limit": fd_limit,
        "seconds": round(time.monotonic() - started, 1),
        "problems": verdict.problems,
    }
    counts["ok"] = (
        verdict.ok
        and alive_at_end
        and alive_after_flood
        and peak_kib <= bound.kib
        and after_kib <= bound.kib
        and ledger.lives[1] > 0
    )
    return counts
