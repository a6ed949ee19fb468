"""The `Cluster` port on PostgreSQL: presence with leases, and wake-ups by LISTEN/NOTIFY.

Theory of operation
-------------------
Each node has a row in `nodes` that it heartbeats every `lease_s / 5`; each online user a row in
`presence` naming the one node that pushes to them. Presence changes and new outbox items are
announced by the engine's one NOTIFY per committed batch, on the channel every node LISTENs on (a
dedicated control connection: a pooler in transaction mode would not carry LISTEN). Payload lines:

    <node id of the sender>         first line; a node ignores its own notifications
    + <alias> <node> <c|s> <addr>   online at <node> (classic with its listener, or session)
    - <alias>                       offline
    x <alias> <node>                offline: <node> was swept as dead
    w <alias>                       new items for <alias>: its node's courier reads the store
    !                               too much to list: re-read presence, every courier looks

Heartbeats run on the control connection, not in the engine's batches: a node whose batches are
slow or wait on locks is busy, not dead, and must not lose its lease for it.

Death and takeover: after each heartbeat a node also sweeps the nodes whose heartbeat is older than
the lease (by the database's clock, so the nodes' clocks do not matter). In one transaction it
takes their classic users over (their rows now name it, and it starts pushing to their listeners)
and deletes the rest of their presence; `FOR UPDATE SKIP LOCKED` makes one node do it. Only a node
that has renewed its own lease without a gap for a whole lease judges others: when the database
comes back after an outage longer than the lease, every heartbeat is old, and the live nodes get a
lease to renew before anyone is swept. A node that was swept while alive (stalled, cut off) hears
its own name in the `x` lines and claims back the session users still connected to it. A node that
cannot renew its own lease for most of its length stops pushing to classic users (another may have
taken them), and re-reads the table once it can again. Notifications missed while the LISTEN
connection was down are made up by a resync (the table, and a poke of every courier).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dmds.core.model import Presence
from dmds.core.ports import ClusterEvents
from dmds.errors import AlreadyConnected, StoreError, UnknownUser
from dmds.stores.postgresql.engine import CHANNEL, Batch, Engine, connect, redact

log = logging.getLogger(__name__)

#: Heartbeats (and sweeps) per lease.
BEATS_PER_LEASE = 5
#: Share of the lease after which a node that could not renew it stops pushing to classic users.
LOST_AT = 0.8
#: Heartbeat periods without a renewal after which this node judges no one for a whole lease.
STEADY_GAP = 2.5


def presence_line(entry: Presence) -> str:
    return f"+ {entry.alias} {entry.node} {'c' if entry.classic else 's'} {entry.address or '-'}"


@dataclass
class Notice:
    """One notification, parsed."""

    node: str  # the sender
    changes: list[tuple[str, Presence | None]] = field(default_factory=list)
    #: (alias, node) of users whose node was swept as dead
    swept: list[tuple[str, str]] = field(default_factory=list)
    woken: set[str] = field(default_factory=set)
    everything: bool = False


def parse(payload: str) -> Notice:
    node, _, rest = payload.partition("\n")
    notice = Notice(node)
    for line in rest.split("\n"):
        op, _, args = line.partition(" ")
        if op == "w":
            notice.woken.add(args)
        elif op == "+":
            alias, at, kind, address = args.split(" ")
            entry = Presence(alias, at, kind == "c", "" if address == "-" else address)
            notice.changes.append((alias, entry))
        elif op == "-":
            notice.changes.append((args, None))
        elif op == "x":
            alias, at = args.split(" ")
            notice.swept.append((alias, at))
        elif op == "!":
            notice.everything = True
    return notice


class PostgresCluster:
    """`dmds.core.ports.Cluster` for the nodes of one PostgreSQL store."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self._engine = engine
        self.node_id = engine.node_id
        self._lease_s = lease_s
        self._events: ClusterEvents | None = None
        self._listen: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._renewed = time.monotonic()
        #: since when this node has renewed its lease without a gap (see `_tick`)
        self._steady_since = self._renewed
        self._lost = False
        self._resync_due = False
        #: a LISTEN connection was open before: a new one must read back what it missed
        self._listened = False
        self._wake = asyncio.Event()

    @property
    def listening(self) -> bool:
        """The LISTEN (and heartbeat) connection is open."""
        return self._listen is not None and not self._listen.is_closed()

    async def start(self, events: ClusterEvents) -> None:
        self._events = events
        await self._listen_again()  # first: nothing committed after the table is read is missed

        async def join(conn: asyncpg.Connection, batch: Batch) -> list[Presence]:
            await conn.execute(
                "INSERT INTO nodes (node_id) VALUES ($1)"
                " ON CONFLICT (node_id) DO UPDATE SET started_at = now(), heartbeat_at = now()",
                self.node_id,
            )
            # A node restarted under the same id: its session connections are gone; its classic
            # users' listeners are not, and it goes on pushing to them.
            for alias in await conn.fetch(
                "DELETE FROM presence WHERE node_id = $1 AND NOT classic RETURNING alias", self.node_id
            ):
                batch.presence.append(f"- {alias[0]}")
            return await _table(conn)

        entries = await self._engine.submit(join)
        events.cluster_resync(entries)
        self._renewed = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="dmds-cluster-heartbeat")
        log.info("node %s joined the cluster (lease %.1f s)", self.node_id, self._lease_s)

    async def claim(self, alias: str, classic: bool, address: str) -> None:
        node = self.node_id

        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            if classic:
                # An entry of this node's own is one the core no longer serves (a disconnect whose
                # release is still on its way): it is taken, not refused.
                row = await conn.fetchval(
                    "INSERT INTO presence (alias, node_id, classic, address) SELECT $1, $2, true, $3"
                    " WHERE EXISTS (SELECT 1 FROM users WHERE alias = $1)"
                    " ON CONFLICT (alias) DO UPDATE SET classic = true, address = EXCLUDED.address,"
                    " since = now() WHERE presence.node_id = EXCLUDED.node_id RETURNING alias",
                    alias,
                    node,
                    address,
                )
                if row is None:
                    if await conn.fetchval("SELECT 1 FROM presence WHERE alias = $1", alias):
                        raise AlreadyConnected(alias)
                    raise UnknownUser(alias)
            else:
                row = await conn.fetchval(
                    "INSERT INTO presence (alias, node_id, classic, address) SELECT $1, $2, false, ''"
                    " WHERE EXISTS (SELECT 1 FROM users WHERE alias = $1)"
                    " ON CONFLICT (alias) DO UPDATE SET node_id = EXCLUDED.node_id, classic = false,"
                    " address = '', since = now() RETURNING alias",
                    alias,
                    node,
                )
                if row is None:
                    raise UnknownUser(alias)
            batch.presence.append(presence_line(Presence(alias, node, classic, address)))

        await self._engine.submit(job)

    async def release(self, alias: str, node: str | None = None) -> bool:
        async def job(conn: asyncpg.Connection, batch: Batch) -> bool:
            if node is None:
                row = await conn.fetchval("DELETE FROM presence WHERE alias = $1 RETURNING alias", alias)
            else:
                row = await conn.fetchval(
                    "DELETE FROM presence WHERE alias = $1 AND node_id = $2 RETURNING alias", alias, node
                )
            if row is None:
                return False
            batch.presence.append(f"- {alias}")
            return True

        done: bool = await self._engine.submit(job)
        return done

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

        async def leave(conn: asyncpg.Connection, batch: Batch) -> None:
            # A clean stop: this node's users go offline now rather than at the end of the lease.
            rows = await conn.fetch("DELETE FROM presence WHERE node_id = $1 RETURNING alias", self.node_id)
            batch.presence.extend(f"- {alias}" for (alias,) in rows)
            await conn.execute("DELETE FROM nodes WHERE node_id = $1", self.node_id)

        with contextlib.suppress(StoreError):
            await self._engine.submit(leave)
        if self._listen is not None and not self._listen.is_closed():
            await self._listen.close()

    # -- the heartbeat --------------------------------------------------------------------------------

    async def _beat(self) -> None:
        period = self._lease_s / BEATS_PER_LEASE
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._tick(period)
            except (StoreError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("cluster heartbeat failed: %s", exc or "timeout")
                self._drop_control()
            except Exception:
                log.exception("cluster heartbeat failed")
                self._drop_control()
            if not self._lost and time.monotonic() - self._renewed > LOST_AT * self._lease_s:
                self._lost = True
                self._resync_due = True
                assert self._events is not None
                self._events.cluster_lost()

    async def _tick(self, period: float) -> None:
        """Renew this node's lease on the control connection (never queued behind a batch of
        requests: a busy node is not a dead one); sweep dead nodes when it is fair to judge."""
        assert self._events is not None
        if self._listen is None or self._listen.is_closed():
            await self._listen_again()
        conn = self._listen
        assert conn is not None
        renewed = await conn.fetchval(
            "INSERT INTO nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE"
            " SET heartbeat_at = now() RETURNING (xmax = 0)",
            self.node_id,
            timeout=self._lease_s,
        )  # true: the row was gone (swept while silent), joined again
        now = time.monotonic()
        if now - self._renewed > STEADY_GAP * period:
            # A gap in our own renewals (the database away, say): the other nodes had it too, so
            # give them a whole lease to renew before anyone is judged dead.
            self._steady_since = now
        self._renewed = now
        if renewed or self._lost or self._resync_due:
            self._lost = False
            await self._resync()
            return
        if now - self._steady_since >= self._lease_s:
            await self._sweep(conn)

    async def _sweep(self, conn: asyncpg.Connection) -> None:
        """Take over the nodes whose lease ran out: their classic users (rows now name this node,
        which pushes to their listeners), and the rest of their presence goes, in one transaction
        with its NOTIFY. `SKIP LOCKED`: one node does it."""
        node = self.node_id
        batch = Batch()
        async with conn.transaction():
            dead = [
                r[0]
                for r in await conn.fetch(
                    "SELECT node_id FROM nodes WHERE heartbeat_at < now() - make_interval(secs => $1)"
                    " AND node_id <> $2 FOR UPDATE SKIP LOCKED",
                    self._lease_s,
                    node,
                    timeout=self._lease_s,
                )
            ]
            if not dead:
                return
            adopted = await conn.fetch(
                "UPDATE presence SET node_id = $1, since = now() WHERE node_id = ANY($2::text[])"
                " AND classic RETURNING alias, address",
                node,
                dead,
                timeout=self._lease_s,
            )
            gone = await conn.fetch(
                "DELETE FROM presence WHERE node_id = ANY($1::text[]) RETURNING alias, node_id",
                dead,
                timeout=self._lease_s,
            )
            await conn.execute("DELETE FROM nodes WHERE node_id = ANY($1::text[])", dead)
            for alias, address in adopted:
                batch.presence.append(presence_line(Presence(alias, node, True, address)))
            # `x`: the node named may be alive after all (stalled, cut off): it claims its session
            # users back rather than dropping them.
            batch.presence.extend(f"x {alias} {at}" for alias, at in gone)
            payload = batch.payload(node)
            if payload is not None:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        log.warning("node(s) %s missed their lease: taking over", ", ".join(dead))
        changes: list[tuple[str, Presence | None]] = [
            (alias, Presence(alias, node, True, address)) for alias, address in adopted
        ]
        changes += [(alias, None) for alias, _ in gone]
        assert self._events is not None
        self._events.cluster_presence(changes)

    def _drop_control(self) -> None:
        """A control connection in an unknown state (a timed-out query) is not reused."""
        conn, self._listen = self._listen, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _resync(self) -> None:
        assert self._events is not None

        async def job(conn: asyncpg.Connection, batch: Batch) -> list[Presence]:
            return await _table(conn)

        entries: list[Presence] = await self._engine.submit(job)
        self._resync_due = False
        self._events.cluster_resync(entries)
        self._events.cluster_woken(None)

    # -- LISTEN ---------------------------------------------------------------------------------------

    async def _listen_again(self) -> None:
        conn = await connect(self._engine.url, 5.0)
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._listen_lost)
        self._listen = conn
        listened, self._listened = self._listened, True
        if listened:
            log.info("LISTEN connection to %s open again", redact(self._engine.url))
            if self._engine.metrics is not None:
                self._engine.metrics.listen_reconnects += 1
            self._resync_due = True  # what was notified meanwhile is lost: read it back

    def _listen_lost(self, conn: asyncpg.Connection) -> None:
        log.warning("LISTEN connection lost; reconnecting")
        self._wake.set()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        notice = parse(payload)
        if notice.node == self.node_id or self._events is None:
            return
        if notice.everything:
            self._resync_due = True
            self._wake.set()
            return
        changes = notice.changes
        for alias, at in notice.swept:
            if at == self.node_id:
                # Thought dead, alive: the resync claims back the session users still connected
                # here (their classic users came as `+` lines of the node that took them).
                self._resync_due = True
                self._wake.set()
            else:
                changes.append((alias, None))
        if changes:
            self._events.cluster_presence(changes)
        if notice.woken:
            self._events.cluster_woken(notice.woken)


async def _table(conn: asyncpg.Connection) -> list[Presence]:
    rows = await conn.fetch("SELECT alias, node_id, classic, address FROM presence")
    return [Presence(alias, node, classic, address) for alias, node, classic, address in rows]
