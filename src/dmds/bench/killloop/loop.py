"""The kill loop: the load started, servers (or the database) killed and restarted, the drain, the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmds.bench.killloop.check import (
    Verdict,
    check,
    missing_session_receipts,
    receipts_complete,
    undelivered_in_history,
)
from dmds.bench.killloop.classic_users import ClassicRecipient, ClassicSender, ClassicUser
from dmds.bench.killloop.ledger import Ledger, RecipientLog, SenderLog
from dmds.bench.killloop.server import (
    DRAIN_CAP_S,
    DRAIN_STALL_S,
    KILL_SERVER_ARGS,
    ChaosServer,
    wait_progressing,
)
from dmds.bench.killloop.session_users import SessionRecipient, SessionSender, SessionUser

if TYPE_CHECKING:
    from dmds.cluster.postgres import LocalPostgres


def _fleet(cfg: KillLoopConfig) -> list[ChaosServer]:
    """One server on its data dir, or `cfg.nodes` nodes on the PostgreSQL store."""
    if not cfg.store:
        if cfg.nodes != 1:
            raise ValueError("several nodes need a PostgreSQL store (--store postgresql://...)")
        return [ChaosServer(cfg.workdir / "data", cfg.workdir / "server.log", KILL_SERVER_ARGS)]
    extra = (*KILL_SERVER_ARGS, "--store", cfg.store, "--lease-s", str(cfg.lease_s))
    return [
        ChaosServer(cfg.workdir / f"data{i}", cfg.workdir / f"node{i}.log", extra, node=f"node{i}")
        for i in range(cfg.nodes)
    ]


@dataclass
class KillLoopConfig:
    kills: int
    seed: int
    workdir: Path
    #: seconds of load between a restart and the next kill: uniform in this range
    interval_s: tuple[float, float] = (0.5, 3.0)
    #: seconds of load after the last restart
    tail_s: float = 1.5
    window: int = 8  # unanswered sends per session sender
    limit: int = 200_000  # texts per sender at most
    time_limit_s: float = 900.0
    on_kill: Callable[[], None] | None = None
    #: several nodes on one PostgreSQL store (postgresql://...): users spread over them, a random
    #: node killed each time
    nodes: int = 1
    store: str = ""
    lease_s: float = 2.0
    #: the database itself, killed every `kill_db_every`-th time instead of a node
    database: LocalPostgres | None = None
    kill_db_every: int = 3


RECIPIENT_KINDS = (
    ("session", "online"),
    ("session", "offline"),
    ("session", "flip"),
    ("classic", "online"),
    ("classic", "offline"),
)


@dataclass
class _Cast:
    """Who takes part in a run: the logs of what they do, and the clients that do it."""

    senders: list[SenderLog]
    recipients: list[RecipientLog]
    ledger: Ledger
    s_senders: list[SessionSender]
    c_senders: list[ClassicSender]
    s_recipients: list[SessionRecipient]
    c_recipients: list[ClassicRecipient]
    fence: SessionUser

    @property
    def session_users(self) -> list[SessionUser]:
        return [*self.s_senders, *self.s_recipients, self.fence]

    @property
    def classic_users(self) -> list[ClassicUser]:
        return [*self.c_senders, *self.c_recipients]


def _cast(cfg: KillLoopConfig, fleet: list[ChaosServer], rng: random.Random) -> _Cast:
    """A recipient of each kind and a sender of each protocol to each, spread over the nodes."""

    def node_of(i: int) -> ChaosServer:
        return fleet[i % len(fleet)]

    recipients = [RecipientLog(f"r-{p[0]}-{mode}", p, mode) for p, mode in RECIPIENT_KINDS]
    senders = [
        SenderLog(f"{prot[0]}s-{i}", prot, rec.alias)
        for prot in ("session", "classic")
        for i, rec in enumerate(recipients)
    ]
    ledger = Ledger(senders, recipients, database_killed=cfg.database is not None)
    cast = _Cast(
        senders,
        recipients,
        ledger,
        s_senders=[
            SessionSender(node_of(i), ledger, s, cfg.window)
            for i, s in enumerate(s for s in senders if s.protocol == "session")
        ],
        c_senders=[
            ClassicSender(node_of(i + 1), ledger, s)
            for i, s in enumerate(s for s in senders if s.protocol == "classic")
        ],
        s_recipients=[
            SessionRecipient(node_of(i + 2), ledger, r, random.Random(rng.random()))
            for i, r in enumerate(r for r in recipients if r.protocol == "session")
        ],
        c_recipients=[
            ClassicRecipient(node_of(i + 3), r)
            for i, r in enumerate(r for r in recipients if r.protocol == "classic")
        ],
        fence=SessionUser(fleet[0], ledger, "fence"),
    )
    for user in cast.session_users:
        user.others = [node for node in fleet if node is not user.server]
    return cast


@dataclass
class _Kills:
    nodes: int = 0
    databases: int = 0


async def _start_load(
    cast: _Cast, cfg: KillLoopConfig, stop: asyncio.Event, idle: asyncio.Event, deadline: float
) -> tuple[list[asyncio.Task[None]], int]:
    """Accounts registered, senders and recipients running; the tasks, and how many of them (the
    last ones) keep classic recipients CONNECTed until `idle`."""
    for user in cast.session_users:
        await user.register()
    for c_user in cast.classic_users:
        await c_user.register()
    for sender in cast.s_senders:
        await sender.open(deadline)
    tasks = [asyncio.create_task(s.run(stop, cfg.limit, deadline)) for s in cast.s_senders]
    tasks += [asyncio.create_task(c.run(stop, cfg.limit)) for c in cast.c_senders]
    tasks += [asyncio.create_task(r.run(stop)) for r in cast.s_recipients]
    online_classic = [r for r in cast.c_recipients if r.log.mode == "online"]
    tasks += [asyncio.create_task(r.keep_connected(idle)) for r in online_classic]
    return tasks, len(online_classic)


async def _kill_again_and_again(
    cfg: KillLoopConfig,
    rng: random.Random,
    fleet: list[ChaosServer],
    cast: _Cast,
    *,
    deadline: float,
    kills: _Kills,
) -> None:
    for _ in range(cfg.kills):
        await asyncio.sleep(rng.uniform(*cfg.interval_s))
        if time.monotonic() > deadline:
            break
        kills.nodes += 1
        cast.ledger.new_life()
        if cfg.database is not None and kills.nodes % cfg.kill_db_every == 0:
            # The database under load: the nodes answer STORE_FAILURE (never a false
            # acknowledgement) until it is back, then reconnect by themselves.
            cfg.database.kill()
            kills.databases += 1
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            await asyncio.to_thread(cfg.database.restart)
        else:
            victim = rng.choice(fleet)
            victim.kill()
            await victim.start()
            for user in cast.session_users:
                if user.server is victim and user.client is not None:
                    user.client.port = victim.session_port  # read at each reconnection attempt
        if cfg.on_kill is not None:
            cfg.on_kill()


async def fence_and_drain(
    fence: SessionUser, recipients: list[RecipientLog], ledger: Ledger, deadline: float
) -> dict[str, int]:
    """A fence per recipient, sent by `fence` (logged in by `deadline`): pushes go out in commit
    order, so once it is in, all before it is in. Waits for the fences and the receipts for as
    long as arrivals keep coming; returns the fences' ids."""
    fence_client = await fence.open(deadline)
    fences = {
        r.alias: (await fence_client.send(r.alias, "fence", key=f"fence-{r.alias}")).message_id
        for r in recipients
    }
    await wait_progressing(
        lambda: all(fences[r.alias] in r.ids() for r in recipients) and receipts_complete(ledger),
        ledger.progress,
        DRAIN_STALL_S,
        DRAIN_CAP_S,
    )
    return fences


async def _drain(cast: _Cast, tasks: list[asyncio.Task[None]], idle: asyncio.Event) -> dict[str, int]:
    """Everyone online, then a fence per recipient; once it is in, all before it is in. Returns the
    fences' ids, once they and the receipts came (or the drain stalled)."""
    drain_deadline = time.monotonic() + 120
    for rec in cast.s_recipients:
        await rec.drain(drain_deadline)
    for c_rec in cast.c_recipients:
        if c_rec.log.mode == "offline":
            tasks.append(asyncio.create_task(c_rec.keep_connected(idle)))
    for c_sender in cast.c_senders:  # receipts wait for their sender's next CONNECT
        tasks.append(asyncio.create_task(c_sender.keep_connected(idle)))
    return await fence_and_drain(cast.fence, cast.recipients, cast.ledger, drain_deadline)


async def _verdict(cast: _Cast, fences: dict[str, int], workdir: Path) -> Verdict:
    """The check, with History asked about the session receipts that never came; on a failure,
    the whole ledger written to `workdir`/ledger.json."""
    undelivered = 0
    for sender_alias, ids in missing_session_receipts(cast.ledger).items():
        user = next(s for s in cast.s_senders if s.alias == sender_alias)
        undelivered += await undelivered_in_history(user, user.log.to, ids)
    verdict = check(cast.ledger, fences, undelivered)
    if not verdict.ok:  # what was sent and what arrived, to see what happened
        dump = {
            "problems": verdict.problems,
            "fences": fences,
            "senders": [vars(x) for x in cast.senders],
            "recipients": [vars(r) for r in cast.recipients],
        }
        (workdir / "ledger.json").write_text(json.dumps(dump, default=sorted))
    return verdict


async def cancel_and_close(
    tasks: list[asyncio.Task[None]], users: Sequence[SessionUser | ClassicUser]
) -> None:
    """The end of a run, whatever happened: every task cancelled, then every user's client closed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for user in users:
        with contextlib.suppress(Exception):
            await user.close()


async def _wind_down(cast: _Cast, tasks: list[asyncio.Task[None]], fleet: list[ChaosServer]) -> int | None:
    """Every task cancelled, every client closed, every node stopped; the first failing exit code."""
    await cancel_and_close(tasks, [*cast.session_users, *cast.classic_users])
    codes = [await node.stop() for node in fleet]
    return next((c for c in codes if c), codes[0])


async def kill_loop(cfg: KillLoopConfig) -> dict[str, Any]:
    """Run the kill loop; returns its counts (see `MUST_BE_ZERO`) and `ok`."""
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    deadline = started + cfg.time_limit_s
    fleet = _fleet(cfg)
    for node in fleet:
        await node.start()
    cast = _cast(cfg, fleet, rng)
    ledger = cast.ledger
    stop, idle = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    kills = _Kills()
    try:
        tasks, keepers = await _start_load(cast, cfg, stop, idle, deadline)
        await _kill_again_and_again(cfg, rng, fleet, cast, deadline=deadline, kills=kills)
        await asyncio.sleep(cfg.tail_s)
        stop.set()
        load_s = time.monotonic() - started
        # The senders finish what they started (every session send ends answered), the recipients
        # that log in and out end their last round.
        await asyncio.wait_for(asyncio.gather(*tasks[: len(tasks) - keepers]), 120)
        fences = await _drain(cast, tasks, idle)
        verdict = await _verdict(cast, fences, cfg.workdir)
    finally:
        stop.set()
        idle.set()
        exit_code = await _wind_down(cast, tasks, fleet)
    return {
        "kills": kills.nodes,
        "nodes": len(fleet),
        "database_kills": kills.databases,
        "store_failure_answers": ledger.store_failures,
        "restarts_on_new_ports": sum(node.moved for node in fleet),
        "seed": cfg.seed,
        **verdict.counts,
        "acknowledged_per_life": ledger.lives,
        "lives_without_acknowledgements": sum(1 for n in ledger.lives if n == 0),
        "session_reconnections": ledger.reconnections,
        "session_clients_replaced": ledger.replaced_clients,
        "load_seconds": round(load_s, 1),
        "seconds": round(time.monotonic() - started, 1),
        "server_exit_code": exit_code,
        "problems": verdict.problems,
        "ok": verdict.ok,
    }
