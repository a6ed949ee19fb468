"""`dmds bench connections`: N idle logged-in session connections, and the server's memory per connection.

The users are registered first, pipelined on a single connection, which is then closed; the server's
resident memory (VmRSS) after that is the baseline. Then N connections are opened and logged in with
bounded concurrency, held idle for `--hold` seconds (answering the server's heartbeat Pings), and the
server's RSS is read again: (held - baseline) / N is the memory a connection costs. At the end every
connection must still be open and answer a Ping with its Pong; then all close and the RSS is read once
more, to see how much of it the server gives back.

The generator is one uvloop process speaking the session codec over asyncio.Protocol: logging in is
the server's work (an argon2 verification each), and an idle connection costs the generator nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import uvloop

from dmds.bench import common, servers
from dmds.bench.session import ANSWER_TIMEOUT_S, Peer, open_peer
from dmds.protocols.session import frames as f

PASSWORD = "bench password"  # noqa: S105 - the throwaway accounts of a benchmark
#: Registrations in flight on the one registering connection (each costs an argon2 hash).
REGISTER_WINDOW = 64
#: Connections being opened and logged in at once.
LOGIN_CONCURRENCY = 256
#: Seconds a frame may take to come back (a Pong, a LoggedIn under load).
#: Seconds the server is given to let go of closed connections before its RSS is read again.
SETTLE_S = 3.0
#: File descriptors this process keeps for itself besides the connections.
SPARE_FDS = 64
PROBLEMS_KEPT = 10


class _Tally:
    def __init__(self) -> None:
        self.errors = 0
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.errors += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(text)


async def _register(host: str, port: int, aliases: list[str], tally: _Tally, bar: Any) -> None:
    """Every alias registered on one connection, at most REGISTER_WINDOW in flight."""
    client = await open_peer(host, port)
    (welcome,) = await client.ask(f.Hello(version=f.VERSION, client="dmds-bench"), answers=1)
    if not isinstance(welcome, f.Welcome):
        raise RuntimeError(f"the server answered Hello with {welcome!r}")
    slots = asyncio.Semaphore(REGISTER_WINDOW)
    answered = 0
    all_answered = asyncio.get_running_loop().create_future()

    def on_frame(frame: Any) -> None:
        nonlocal answered
        if isinstance(frame, f.Error):
            tally.problem(f"register {aliases[frame.re - 1] if 0 < frame.re <= len(aliases) else frame.re}: "
                          f"{frame.code.name} {frame.message}")  # fmt: skip
        elif not isinstance(frame, f.Ok):
            tally.problem(f"register: unexpected {frame!r}")
            return
        answered += 1
        slots.release()
        bar.advance(bar.task_ids[0])
        if answered == len(aliases) and not all_answered.done():
            all_answered.set_result(None)

    client.on_frame = on_frame
    for n, alias in enumerate(aliases, 1):
        await slots.acquire()
        if client.lost:
            raise RuntimeError("the registering connection was closed by the server")
        client.send(
            f.Register(id=n, alias=alias, full_name="Bench User", birth_date="01/01/2000", password=PASSWORD)
        )
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        await all_answered
    client.close()


async def _login(host: str, port: int, alias: str, tally: _Tally) -> Peer | None:
    try:
        client = await open_peer(host, port)
        welcome, answer = await client.ask(
            f.Hello(version=f.VERSION, client="dmds-bench"), f.Login(id=1, alias=alias, password=PASSWORD),
            answers=2,
        )  # fmt: skip
    except (OSError, TimeoutError) as exc:
        tally.problem(f"login {alias}: {exc!r}")
        return None
    if not isinstance(welcome, f.Welcome) or not isinstance(answer, f.LoggedIn):
        tally.problem(f"login {alias}: {welcome!r}, {answer!r}")
        client.close()
        return None
    return client


async def _alive(client: Peer, n: int) -> bool:
    """Still open, and answers a Ping with its Pong."""
    if client.lost:
        return False
    try:
        (pong,) = await client.ask(f.Ping(n=n), answers=1)
    except (OSError, TimeoutError):
        return False
    return isinstance(pong, f.Pong) and pong.n == n


async def _settled_rss(pid: int) -> int:
    """The server's RSS once it stopped falling (at most SETTLE_S): freeing connections takes it a
    few loop passes."""
    rss = servers.rss_bytes(pid)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = servers.rss_bytes(pid)
        if now >= rss:
            return now
        rss = now
    return rss


async def _measure(args: argparse.Namespace, target: servers.Target, system: str) -> common.Run:
    assert target.session_port is not None
    host, port, pid, count = target.host, target.session_port, target.pid, args.count
    tag = f"{os.getpid() % 100000}x{time.time_ns() % 10**9}"
    aliases = [f"c{tag}-{i}" for i in range(count)]
    tally = _Tally()
    extra: dict[str, Any] = {"problems": tally.problems}
    bound = phase_seconds(count)

    start = time.perf_counter()
    with common.progress(f"connections {system}: register", count) as bar:
        try:
            async with asyncio.timeout(bound):
                await _register(host, port, aliases, tally, bar)
        except (OSError, RuntimeError, TimeoutError) as exc:
            tally.problem(f"registering: {exc!r}")
            return common.Run(system, 0, 0.0, None, None, tally.errors, None, extra)
    extra["register_seconds"] = time.perf_counter() - start
    await asyncio.sleep(1.0)  # the registering connection's close, handled
    rss_before = await _settled_rss(pid) if pid is not None else None

    clients: list[Peer] = []
    meter, cpu = servers.Meter(pid), common.own_cpu_seconds(children=False)
    start = time.perf_counter()
    slots = asyncio.Semaphore(LOGIN_CONCURRENCY)
    with common.progress(f"connections {system}: log in", count) as bar:

        async def one(alias: str) -> None:
            async with slots:
                client = await _login(host, port, alias, tally)
            if client is not None:
                clients.append(client)
            bar.advance(bar.task_ids[0])

        try:
            async with asyncio.timeout(bound):
                await asyncio.gather(*(one(alias) for alias in aliases))
        except TimeoutError:
            tally.problem(f"logging in took more than {bound:.0f} s")
    seconds = time.perf_counter() - start
    server_cpu, phase = meter.stop()
    generator_cpu = common.own_cpu_seconds(children=False) - cpu
    extra.update(phase)
    extra["logged_in"] = len(clients)

    await asyncio.sleep(args.hold)
    if pid is not None and rss_before is not None:
        rss_held = servers.rss_bytes(pid)
        extra.update(
            rss_before=rss_before,
            rss_held=rss_held,
            bytes_per_connection=(rss_held - rss_before) / max(1, len(clients)),
        )

    with common.progress(f"connections {system}: ping", len(clients)) as bar:

        async def check(client: Peer, n: int) -> bool:
            ok = await _alive(client, n)
            bar.advance(bar.task_ids[0])
            return ok

        # Each check is bounded by ANSWER_TIMEOUT_S: all of them together too.
        alive = sum(await asyncio.gather(*(check(c, n) for n, c in enumerate(clients, 1))))
    if alive != len(clients):
        tally.problem(f"{len(clients) - alive} of {len(clients)} connections closed or silent at the end")

    for client in clients:
        client.close()
    if pid is not None and rss_before is not None:
        rss_after = await _settled_rss(pid)
        extra.update(
            rss_after_close=rss_after,
            bytes_per_connection_after_close=(rss_after - rss_before) / max(1, len(clients)),
        )
    return common.Run(system, alive, seconds, server_cpu, generator_cpu, tally.errors, None, extra)


def phase_seconds(count: int) -> float:
    """Bound on registering, or on logging in, `count` users: at least 50 a second."""
    return 60.0 + count / 50


def run(args: argparse.Namespace) -> common.Result:
    limit = common.raise_open_files_limit()  # before the server starts: it inherits the limit
    runs = []
    syncs = [None] if args.host is not None else (list(args.sync) if args.sync else ["full"])
    flags = [
        "--max-sessions", str(args.count + 100), "--argon2-time-cost", "1", "--argon2-memory-kib", "1024",
        "--max-send-rate", "0",
        # Every registration with a password counts against its address (4 per allowed failure):
        # all of these come from 127.0.0.1.
        "--login-failures", str(args.count),
    ]  # fmt: skip
    for _ in range(args.runs):
        for sync in syncs:
            with servers.target(args, sync or "full", *flags, protocol="session") as target:
                system = f"dmds --sync {sync}" if sync else f"server at {args.host}:{args.port or 7001}"
                run = uvloop.run(_measure(args, target, system))
            if args.count + SPARE_FDS > limit:
                run.extra["problems"].append(f"open files limited to {limit}: fewer connections possible")
            runs.append(run)
    return common.Result(
        "connections",
        {"count": args.count, "hold_s": args.hold, "login_concurrency": LOGIN_CONCURRENCY},
        runs,
        "every user registered and logged in (Welcome, LoggedIn), each connection still open after the "
        "hold and answering a Ping with its Pong. Memory: server VmRSS held minus before the "
        "connections, per connection; rate: logins per second",
    )
