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
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from dmds.bench.common import percentiles
from dmds.bench.killloop import (
    DRAIN_CAP_S,
    DRAIN_STALL_S,
    HOST,
    ChaosServer,
    ClassicRecipient,
    ClassicSender,
    Ledger,
    RecipientLog,
    SenderLog,
    SessionRecipient,
    SessionSender,
    SessionUser,
    check,
    receipts_complete,
    wait_progressing,
)
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import Connection, Role
from dmds.settings import ClassicLimits, SessionSettings, StoreSettings

KIB, MIB = 1024, 1024 * 1024
#: Server memory per open connection beyond what it buffers (measured: about 3 KiB per idle session).
CONNECTION_OVERHEAD = 64 * KIB
#: Threads of the server's default executor, where argon2 runs: asyncio's min(32, cores + 4).
ARGON2_THREADS = min(32, (os.cpu_count() or 1) + 4)
#: Allocator and interpreter noise on top of the bound.
SLACK = 32 * MIB
#: Hostile accounts: each logged-in "never read" connection resumes one of them (a newer login of
#: the same account takes over the older connection).
HOSTILE_ACCOUNTS = 4
#: Messages between hostile accounts, so that their History pages are real pages.
HOSTILE_MESSAGES = 300
#: History requests pipelined by a logged-in connection that never reads: answers well past
#: max_outgoing_bytes plus what the kernel's socket buffers absorb.
HISTORY_REQUESTS = 300
#: Logged-in "never read" connections at once (their queries are what the server materialises).
MAX_UNREAD_LOGGED_IN = 8
#: Requests pipelined by an anonymous connection that never reads.
ANON_REQUESTS = 2000
WRONG_PASSWORD = "not the password"  # noqa: S105
#: Largest small answer (Pong, Error NOT_LOGGED_IN, Presence...), in bytes.
ANSWER_BYTES = 128
#: Memory an answer costs while it is built, per byte of its encoded size (see answers_being_built).
BUILD_FACTOR = 8

_PREFIX = struct.Struct(">I")


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


@dataclass
class Target:
    """What the hostile connections aim at, learnt during the setup."""

    server: ChaosServer
    tokens: list[str]
    page_bytes: int  # encoded size of one History page of the hostile conversation
    unread_logged_in: asyncio.Semaphore
    session: SessionSettings = field(default_factory=SessionSettings)
    classic: ClassicLimits = field(default_factory=ClassicLimits)
    store: StoreSettings = field(default_factory=StoreSettings)


# -- hostile behaviours ------------------------------------------------------------------------------
# Each returns the bytes it sent; the caller holds the connection until the server closes it (read
# to EOF) or `hold_s` passes. Those marked "never read" sleep instead of reading.

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_CLIENT = Connection(Role.CLIENT)


def _frame(frame: f.Frame) -> bytes:
    return _CLIENT.send(frame, 0)


_HELLO = _frame(f.Hello(version=f.VERSION, client="flood"))


async def _read_to_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _never_read() -> None:
    await asyncio.Event().wait()  # until hold_s: the caller's timeout


async def s_garbage(stream: Stream, rng: random.Random, target: Target) -> int:
    data = rng.randbytes(rng.randint(1, 4096))
    stream[1].write(data)
    await _read_to_eof(stream[0])
    return len(data)


async def s_stall_hello(stream: Stream, rng: random.Random, target: Target) -> int:
    data = _HELLO[: rng.randint(1, len(_HELLO) - 1)]
    stream[1].write(data)
    await _read_to_eof(stream[0])  # handshake_timeout_s
    return len(data)


async def s_stall_frame(stream: Stream, rng: random.Random, target: Target) -> int:
    size = target.session.max_frame_bytes
    data = _HELLO + _PREFIX.pack(size) + b"\x81" * (size // 2)  # half of the largest frame allowed
    stream[1].write(data)
    await _read_to_eof(stream[0])  # idle_timeout_s
    return len(data)


async def s_oversized(stream: Stream, rng: random.Random, target: Target) -> int:
    data = _HELLO + _PREFIX.pack(0xFFFFFFFF) + rng.randbytes(65536)
    stream[1].write(data)
    await _read_to_eof(stream[0])  # FRAME_TOO_LARGE at once
    return len(data)


async def s_unread_anonymous(stream: Stream, rng: random.Random, target: Target) -> int:
    frames: list[f.Frame] = []
    for n in range(1, ANON_REQUESTS + 1):
        frames.append(f.Ping(n=n) if n % 2 else f.History(id=n, peer="pair-a", limit=500))
    data = _HELLO + b"".join(_frame(fr) for fr in frames)
    stream[1].write(data)
    await _never_read()
    return len(data)


async def s_unread_logged_in(stream: Stream, rng: random.Random, target: Target) -> int:
    reader, writer = stream
    account = rng.randrange(HOSTILE_ACCOUNTS)
    codec = Connection(Role.CLIENT)
    login = _frame(f.Login(id=1, token=target.tokens[account]))
    writer.write(_HELLO + login)
    while True:  # the History requests must come after the login is done
        chunk = await reader.read(65536)
        if not chunk:
            return len(_HELLO) + len(login)
        codec.receive_data(chunk, 0)
        events = []
        while (event := codec.next_event()) is not None:
            events.append(event)
        if any(isinstance(e, f.LoggedIn | f.Error) for e in events):
            break
    peer = f"h-{(account + 1) % HOSTILE_ACCOUNTS}"
    asks = [f.Subscribe(id=2)] + [f.History(id=3 + n, peer=peer, limit=500) for n in range(HISTORY_REQUESTS)]
    data = b"".join(_frame(a) for a in asks)
    writer.write(data)
    await _never_read()  # until the server cuts it off (max_outgoing_bytes) or hold_s
    return len(_HELLO) + len(login) + len(data)


async def s_wrong_password(stream: Stream, rng: random.Random, target: Target) -> int:
    alias = rng.choice(["pair-a", "pair-b", "h-0", "nobody"])
    data = _HELLO + _frame(f.Login(id=1, alias=alias, password=WRONG_PASSWORD))
    stream[1].write(data)
    # Answered BAD_CREDENTIALS, then RATE_LIMITED; the connection stays open: leave after it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await _read_to_eof(stream[0])
    return len(data)


async def connect_close(stream: Stream, rng: random.Random, target: Target) -> int:
    if rng.random() < 0.5:  # a reset rather than a close
        sock = stream[1].get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return 0


async def c_garbage(stream: Stream, rng: random.Random, target: Target) -> int:
    data = bytes(
        rng.choice(b"\0\0ABCDEFGHIJKLMNOPQRSTUVWXYZ\xff\x80 0123456789") for _ in range(rng.randint(1, 2048))
    )
    stream[1].write(data)
    stream[1].write_eof()
    await _read_to_eof(stream[0])
    return len(data)


async def c_stall(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"SEND\0cpair-a\0cpair-b\0half a mess"
    stream[1].write(data[: rng.randint(1, len(data))])
    await _read_to_eof(stream[0])  # request_timeout_s, then "2" + 4 bytes
    return len(data)


async def c_oversized(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"SEND\0" + b"A" * MIB  # a field far past max_field_bytes, never ended
    stream[1].write(data)
    with contextlib.suppress(OSError):
        await stream[1].drain()  # the server answers, then drops the rest (it lingers)
    await _read_to_eof(stream[0])
    return len(data)


async def c_unread(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"CONNECTEDUSERS\0cpair-a\0"
    stream[1].write(data)
    await _never_read()
    return len(data)


Behaviour = Callable[[Stream, random.Random, Target], Awaitable[int]]

#: name -> (protocol, behaviour)
BEHAVIOURS: dict[str, tuple[str, Behaviour]] = {
    "session garbage": ("session", s_garbage),
    "session stall in hello": ("session", s_stall_hello),
    "session stall in frame": ("session", s_stall_frame),
    "session oversized prefix": ("session", s_oversized),
    "session never read, anonymous": ("session", s_unread_anonymous),
    "session never read, logged in": ("session", s_unread_logged_in),
    "session wrong password": ("session", s_wrong_password),
    "session connect-close": ("session", connect_close),
    "classic garbage": ("classic", c_garbage),
    "classic stall": ("classic", c_stall),
    "classic oversized field": ("classic", c_oversized),
    "classic never read": ("classic", c_unread),
    "classic connect-close": ("classic", connect_close),
}


def worst_case_bytes(name: str, sent: int, target: Target) -> int:
    """What the server may keep for one connection of behaviour `name` (see the module docstring):
    unread output up to max_outgoing_bytes, or input up to a request or a frame."""
    s, c = target.session, target.classic
    if name == "session never read, logged in":
        return min(s.max_outgoing_bytes, (1 + HISTORY_REQUESTS) * max(target.page_bytes, ANSWER_BYTES))
    if name == "session never read, anonymous":
        return min(s.max_outgoing_bytes, ANON_REQUESTS * ANSWER_BYTES)
    if name.startswith("session"):
        return min(sent, s.max_frame_bytes)
    return min(sent, c.max_text_bytes + 4 * c.max_field_bytes)


def answers_being_built_bytes(target: Target) -> int:
    """Answers the server builds before it writes them (or drops them: the asker was cut off).
    Reads run in the store's batches of at most max_batch jobs, and the results of about two
    batches are alive at once (one being turned into frames while the next is read). Each answer is
    counted `BUILD_FACTOR` times its encoded size: the rows, the objects and the bytes it passes
    through (measured: about 5 times for History pages)."""
    return 2 * target.store.max_batch * BUILD_FACTOR * max(target.page_bytes, ANSWER_BYTES)


@dataclass
class Tally:
    """Per behaviour: connections, their outcomes, the most open at once, the most bytes sent."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_now: Counter[str] = field(default_factory=Counter)
    peak_open: Counter[str] = field(default_factory=Counter)
    max_sent: Counter[str] = field(default_factory=Counter)


async def _hostile(name: str, rng: random.Random, target: Target, hold_s: float, tally: Tally) -> None:
    if name == "session never read, logged in":
        async with target.unread_logged_in:  # each costs the server a batch of queries
            await _hostile_connection(name, rng, target, hold_s, tally)
    else:
        await _hostile_connection(name, rng, target, hold_s, tally)


async def _hostile_connection(
    name: str, rng: random.Random, target: Target, hold_s: float, tally: Tally
) -> None:
    protocol, behaviour = BEHAVIOURS[name]
    port = target.server.session_port if protocol == "session" else target.server.port
    try:
        async with asyncio.timeout(5):
            stream = await asyncio.open_connection(HOST, port)
    except (OSError, TimeoutError):
        tally.outcomes[(name, "connect failed")] += 1
        return
    tally.open_now[name] += 1
    tally.peak_open[name] = max(tally.peak_open[name], tally.open_now[name])
    outcome = "closed by the server"
    try:
        async with asyncio.timeout(hold_s):
            sent = await behaviour(stream, rng, target)
            tally.max_sent[name] = max(tally.max_sent[name], sent)
    except TimeoutError:
        outcome = "held until hold_s"
    except OSError:
        outcome = "reset by the server"
    finally:
        tally.open_now[name] -= 1
        stream[1].transport.abort()
    if name.endswith("connect-close"):
        outcome = "closed by the flood"
    tally.outcomes[(name, outcome)] += 1


# -- the run ------------------------------------------------------------------------------------------


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


async def flood(cfg: FloodConfig) -> dict[str, Any]:
    """Run the flood; returns its counts, the memory figures and bound, and `ok`."""
    fd_limit = raise_fd_limit()
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    deadline = started + cfg.time_limit_s
    server = ChaosServer(cfg.workdir / "data", cfg.workdir / "server.log", cfg.server_args())
    await server.start()
    pair_to = [RecipientLog("pair-b", "session", "online"), RecipientLog("cpair-b", "classic", "online")]
    pair_from = [SenderLog("pair-a", "session", "pair-b"), SenderLog("cpair-a", "classic", "cpair-b")]
    ledger = Ledger(pair_from, pair_to)
    stop, idle = asyncio.Event(), asyncio.Event()
    s_sender = SessionSender(server, ledger, pair_from[0], window=2)
    c_sender = ClassicSender(server, ledger, pair_from[1])
    s_recipient = SessionRecipient(server, ledger, pair_to[0], random.Random(cfg.seed))
    c_recipient = ClassicRecipient(server, pair_to[1])
    fence = SessionUser(server, ledger, "fence")
    hostile = [SessionUser(server, ledger, f"h-{i}") for i in range(HOSTILE_ACCOUNTS)]
    session_users: list[SessionUser] = [s_sender, s_recipient, fence, *hostile]
    tasks: list[asyncio.Task[None]] = []
    tally = Tally()
    rss: list[int] = []
    sampling = asyncio.Event()
    try:
        for user in session_users:
            await user.register()
        for c_user in (c_sender, c_recipient):
            await c_user.register()
        for user in session_users:
            await user.open(deadline)  # password logins now: the flood's wrong passwords will
            # rate-limit this address, and every later login is by token
        # A real conversation between the hostile accounts, for their History requests.
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
        await fence.close()

        # The pairs, before, during and after the flood (ledger.lives: 0, 1, 2).
        tasks.append(asyncio.create_task(s_sender.run(stop, 10**6, deadline, pace_s=cfg.pair_pace_s)))
        tasks.append(asyncio.create_task(c_sender.run(stop, 10**6, pace_s=cfg.pair_pace_s)))
        tasks.append(asyncio.create_task(c_recipient.keep_connected(idle)))
        await asyncio.sleep(1.0)
        base_kib = server.status_kib("VmRSS")
        sampler = asyncio.create_task(_sample_rss(server, rss, sampling))
        ledger.new_life()

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
            task = asyncio.create_task(_hostile(name, random.Random(rng.random()), target, cfg.hold_s, tally))
            running.add(task)
            task.add_done_callback(finished)
        if running:
            await asyncio.gather(*running)
        flood_s = time.monotonic() - flood_started
        ledger.new_life()
        alive_after_flood = server.alive()
        await asyncio.sleep(2.0)  # the pairs go on: the server is back to normal
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks[:2]), 60)
        # A fence per recipient, as in the kill loop: once it is in, everything before it is in.
        fence_client = await fence.open(time.monotonic() + 30)
        fences = {
            r.alias: (await fence_client.send(r.alias, "fence", key=f"fence-{r.alias}")).message_id
            for r in pair_to
        }
        tasks.append(asyncio.create_task(c_sender.keep_connected(idle)))
        await wait_progressing(
            lambda: all(fences[r.alias] in r.ids() for r in pair_to) and receipts_complete(ledger),
            ledger.progress,
            DRAIN_STALL_S,
            DRAIN_CAP_S,
        )
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
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for user in session_users:
            with contextlib.suppress(Exception):
                await user.close()
        for c_user in (c_sender, c_recipient):
            with contextlib.suppress(Exception):
                await c_user.close()
        alive_at_end = server.alive()
        exit_code = await server.stop()

    # The bound (module docstring), in KiB.
    per_behaviour = {
        name: tally.peak_open[name]
        * (worst_case_bytes(name, tally.max_sent[name], target) + CONNECTION_OVERHEAD)
        for name in BEHAVIOURS
    }
    argon2_kib = 64 if cfg.cheap_argon2 else 65536
    building = answers_being_built_bytes(target) if tally.peak_open["session never read, logged in"] else 0
    bound_kib = (
        base_kib + (sum(per_behaviour.values()) + building + SLACK) // KIB + ARGON2_THREADS * argon2_kib
    )
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
        "rss_bound_kib": bound_kib,
        "rss_bound_parts_kib": {
            **{n: v // KIB for n, v in per_behaviour.items() if v},
            "answers being built": building // KIB,
            "argon2": ARGON2_THREADS * argon2_kib,
            "slack": SLACK // KIB,
        },
        "fd_limit": fd_limit,
        "seconds": round(time.monotonic() - started, 1),
        "problems": verdict.problems,
    }
    counts["ok"] = (
        verdict.ok
        and alive_at_end
        and alive_after_flood
        and peak_kib <= bound_kib
        and after_kib <= bound_kib
        and ledger.lives[1] > 0
    )
    return counts
