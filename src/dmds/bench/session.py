"""Session-protocol load: one sender and one recipient, end to end, durable.

The sender pipelines `Send` frames with at most `window` unanswered; the recipient acknowledges what
it receives, once per loop pass; the run ends when the sender holds a `Delivered` receipt for every
message. What it checks: every message arrives exactly once and in order, with its text, and every
receipt matches. The generator speaks the codec directly over asyncio.Protocol, so that its own cost
stays small next to the server's; the server's CPU time is reported to show which side limits.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import time
import uuid
from collections.abc import Callable
from typing import Any

import uvloop

from dmds.bench import common, servers
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, RemoteProtocolError, Role

#: Seconds a generator waits for the server's answer to one request.
ANSWER_TIMEOUT_S = 60.0
PASSWORD = "bench password"  # noqa: S105 - the throwaway accounts of a benchmark


class Peer(asyncio.Protocol):
    """One session connection: answers Pings, hands every other frame to `on_frame` or keeps it for
    `ask`. Shared by the session workloads (send, queue, connections)."""

    __slots__ = ("_done", "_frames", "_want", "codec", "lost", "on_frame", "transport")

    def __init__(self) -> None:
        self.codec = Connection(Role.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.on_frame: Callable[[Any], None] | None = None
        self.lost = False
        self._frames: list[Any] = []
        self._want = 0
        self._done: asyncio.Future[list[Any]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.codec.receive_data(data, 0)
        try:
            while (frame := self.codec.next_event()) is not None and frame is not CLOSED_EVENT:
                if isinstance(frame, f.Ping):  # the server's heartbeat: idle, yet alive
                    self.send(f.Pong(n=frame.n))
                elif isinstance(frame, f.Messages) and self.on_frame is not None:
                    for message in frame.messages:  # version 2: a page; each counts as pushed alone
                        self.on_frame(message)
                elif self.on_frame is not None:
                    self.on_frame(frame)
                else:
                    self._frames.append(frame)
                    if self._done is not None and len(self._frames) >= self._want:
                        if not self._done.done():
                            self._done.set_result(self._frames)
                        self._done, self._frames = None, []
        except RemoteProtocolError as exc:
            self._fail(ConnectionError(f"bad frame from the server: {exc.message}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError(f"closed by the server: {exc or 'EOF'}"))

    def _fail(self, exc: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def send(self, *frames: f.Frame) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self.codec.send(frame, 0) for frame in frames))

    async def ask(self, *frames: f.Frame, answers: int) -> list[Any]:
        """Send `frames`, return the next `answers` frames from the server."""
        self._done = asyncio.get_running_loop().create_future()
        self._want = answers
        if len(self._frames) >= answers:  # already there (cannot happen for a fresh request)
            self._done.set_result(self._frames)
        self.send(*frames)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            return await self._done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_peer(host: str, port: int) -> Peer:
    _, client = await asyncio.get_running_loop().create_connection(Peer, host, port)
    return client


async def _ask(peer: Peer, frame: f.Frame) -> Any:
    """One request, one answer; an `error` answer raises."""
    (answer,) = await peer.ask(frame, answers=1)
    if isinstance(answer, f.Error):
        raise RuntimeError(f"{type(frame).__name__}: {answer.code.name} {answer.message}")
    return answer


async def _connect(host: str, port: int) -> Peer:
    peer = await open_peer(host, port)
    await _ask(peer, f.Hello(version=f.VERSION, client="dmds-bench", features=[f.RECEIPT_RANGES]))
    return peer


async def _peer(host: str, port: int, alias: str) -> tuple[Peer, str]:
    """A new user, logged in: (its connection, its resume token)."""
    peer = await _connect(host, port)
    await _ask(
        peer, f.Register(id=1, alias=alias, full_name="Bench", birth_date="01/01/2000", password=PASSWORD)
    )
    welcome = await _ask(peer, f.Login(id=2, alias=alias, password=PASSWORD))
    return peer, welcome.token


def _close(peer: Peer) -> None:
    if peer.transport is not None:
        peer.transport.close()


async def _pairs(
    target: servers.Target, pairs: int, *, messages: int, window: int, tick: Callable[[int], None]
) -> tuple[float, list[float]]:
    """`pairs` pairs at once, each sender on one node and its recipient on the next (the same node
    without a cluster); (seconds until the last receipt, every latency)."""
    outcomes = await asyncio.gather(
        *(
            _one_pair(
                target.host,
                target.node_port(i),
                messages=messages,
                window=window,
                tick=tick,
                recipient_port=target.node_port(i + 1),
            )
            for i in range(pairs)
        )
    )
    return max(seconds for seconds, _ in outcomes), [x for _, latencies in outcomes for x in latencies]


async def _one_pair(
    host: str,
    port: int,
    *,
    messages: int,
    window: int,
    tick: Callable[[int], None],
    recipient_port: int | None = None,
) -> tuple[float, list[float]]:
    """Returns (seconds, latencies): the run lasts until every Delivered receipt is back; a latency
    is from the Send written to the Message read by the recipient."""
    run = uuid.uuid4().hex[:8]
    sender, _ = await _peer(host, port, f"s{run}")
    recipient, _ = await _peer(host, recipient_port or port, f"r{run}")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    slots = asyncio.Semaphore(window)
    received: list[int] = []
    sent_at: list[float] = [0.0] * (messages + 1)
    latencies: list[float] = []
    delivered: set[int] = set()
    accepted: list[int] = []  # ids of ours, in order: what a receipt range may name
    acks: list[int] = []
    problems: list[str] = []

    def flush_acks() -> None:
        ids = acks.copy()
        acks.clear()
        recipient.send(f.Ack(message_ids=ids))
        tick(len(ids))

    def receipted(frame: f.Delivered) -> list[int]:
        if not frame.first:
            return [frame.message_id]
        low = bisect.bisect_left(accepted, frame.first)
        return accepted[low : bisect.bisect_right(accepted, frame.message_id)]

    def on_recipient(frame: Any) -> None:
        if isinstance(frame, f.Message):
            n = len(received) + 1
            if frame.text != f"message {n}":
                problems.append(f"message {frame.message_id} came with text {frame.text!r}")
            else:
                latencies.append(time.perf_counter() - sent_at[n])
            received.append(frame.message_id)
            if not acks:
                loop.call_soon(flush_acks)
            acks.append(frame.message_id)

    def on_sender(frame: Any) -> None:
        if isinstance(frame, f.Accepted):
            slots.release()
            if accepted and frame.message_id <= accepted[-1]:
                problems.append(f"accepted {frame.message_id} after {accepted[-1]}")
            accepted.append(frame.message_id)
        elif isinstance(frame, f.Delivered):
            for message_id in receipted(frame):
                if message_id in delivered:
                    problems.append(f"receipt {message_id} twice")
                delivered.add(message_id)
            if len(delivered) == messages and not done.done():
                done.set_result(None)
        elif isinstance(frame, f.Error):
            problems.append(f"error {frame.code.name}: {frame.message}")
            if not done.done():
                done.set_exception(RuntimeError(f"error {frame.code.name}: {frame.message}"))

    recipient.on_frame, sender.on_frame = on_recipient, on_sender
    start = time.perf_counter()
    try:
        for n in range(1, messages + 1):
            await slots.acquire()
            sent_at[n] = time.perf_counter()
            sender.send(f.Send(id=n + 10, to=f"r{run}", key=f"k{n}", text=f"message {n}"))
        await done
        elapsed = time.perf_counter() - start
    finally:
        _close(sender)
        _close(recipient)
    first_ids = received[:1]
    if (
        received != list(range(first_ids[0] if first_ids else 1, len(received) + 1))
        or len(received) != messages
    ):
        problems.append("messages missing, duplicated or out of order")
    if problems:
        raise RuntimeError("; ".join(problems[:5]))
    return elapsed, latencies


async def _queue(
    host: str,
    port: int,
    *,
    messages: int,
    window: int,
    tick: Callable[[int], None],
    mark: Callable[[], None],
    recipient_port: int | None = None,
) -> float:
    """Store `messages` for an offline recipient, then time from its connect to the last message
    (on `recipient_port`: another node of a cluster)."""
    run = uuid.uuid4().hex[:8]
    recipient, token = await _peer(host, recipient_port or port, f"r{run}")
    _close(recipient)  # not a Logout: the token stays valid
    await asyncio.sleep(0.05)  # let the server see it go
    sender, _ = await _peer(host, port, f"s{run}")
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window)
    accepted: asyncio.Future[None] = loop.create_future()
    count = 0

    def on_sender(frame: Any) -> None:
        nonlocal count
        if isinstance(frame, f.Accepted):
            slots.release()
            count += 1
            if count == messages and not accepted.done():
                accepted.set_result(None)
        elif isinstance(frame, f.Error) and not accepted.done():
            accepted.set_exception(RuntimeError(f"error {frame.code.name}: {frame.message}"))

    sender.on_frame = on_sender
    for n in range(1, messages + 1):
        await slots.acquire()
        sender.send(f.Send(id=n + 10, to=f"r{run}", key=f"k{n}", text=f"message {n}"))
    await accepted
    _close(sender)

    drained: asyncio.Future[None] = loop.create_future()
    received: list[int] = []
    acks: list[int] = []
    problems: list[str] = []
    peer: Peer | None = None

    def flush_acks() -> None:
        ids = acks.copy()
        acks.clear()
        if peer is not None:
            peer.send(f.Ack(message_ids=ids))
        tick(len(ids))

    def on_frame(frame: Any) -> None:
        if isinstance(frame, f.Message):
            if frame.text != f"message {frame.message_id}":
                problems.append(f"message {frame.message_id} came with text {frame.text!r}")
            received.append(frame.message_id)
            if not acks:
                loop.call_soon(flush_acks)
            acks.append(frame.message_id)
            if len(received) == messages and not drained.done():
                drained.set_result(None)
        elif isinstance(frame, f.Error) and not drained.done():
            drained.set_exception(RuntimeError(f"error {frame.code.name}: {frame.message}"))

    mark()  # CPU is counted from here: the drain, not the filling
    start = time.perf_counter()
    peer = await open_peer(host, recipient_port or port)
    peer.on_frame = on_frame
    peer.send(f.Hello(version=f.VERSION, client="dmds-bench"))
    peer.send(f.Login(id=1, token=token))  # Login may follow Hello at once
    try:
        await drained
        elapsed = time.perf_counter() - start
    finally:
        _close(peer)
    if received != list(range(1, messages + 1)):
        problems.append("messages missing, duplicated or out of order")
    if problems:
        raise RuntimeError("; ".join(problems[:5]))
    return elapsed


#: The reference of the durable path: `relay.py`, fsync before `accepted` like dmds --sync full.
RELAY = "minimal relay (fsync)"
#: What a started server needs for a benchmark: no send-rate limit, cheap password hashing (the
#: accounts are throwaway), room for the queue.
SERVER_FLAGS = ("--max-send-rate", "0", "--argon2-time-cost", "1", "--argon2-memory-kib", "1024")


def _measure(  # noqa: PLR0917 - one call site per workload
    target: servers.Target,
    system: str,
    total: int,
    description: str,
    work: Callable[..., Any],
    timeout: float,
) -> common.Run:
    cpu, gen, db = target.cpu(), common.own_cpu_seconds(), target.database_cpu()

    def mark() -> None:
        nonlocal cpu, gen, db
        cpu, gen, db = target.cpu(), common.own_cpu_seconds(), target.database_cpu()

    latencies: list[float] = []
    with common.progress(description, total) as bar:
        task = bar.task_ids[0]
        outcome = uvloop.run(asyncio.wait_for(work(lambda n: bar.advance(task, n), mark), timeout))
    seconds = outcome[0] if isinstance(outcome, tuple) else outcome
    if isinstance(outcome, tuple):
        latencies = outcome[1]
    after, db_after = target.cpu(), target.database_cpu()
    extra: dict[str, Any] = {}
    if target.pids:
        extra["nodes"] = len(target.pids)
    if db is not None and db_after is not None:
        extra["database_cpu_s"] = round(db_after - db, 3)
    return common.Run(
        system=system,
        count=total,
        seconds=seconds,
        server_cpu_s=None if cpu is None or after is None else after - cpu,
        generator_cpu_s=common.own_cpu_seconds() - gen,
        latency_ms=common.percentiles(latencies),
        extra=extra,
    )


def _system(args: argparse.Namespace, sync: str) -> str:
    if args.store:
        return f"dmds x{args.nodes} PostgreSQL"
    return f"dmds --sync {sync}" if args.host is None else f"dmds at {args.host}:{args.port}"


def run_send(args: argparse.Namespace) -> common.Result:
    messages = args.messages or 20000
    if args.nodes > 1 and not args.store:
        raise SystemExit("several nodes need --store (local, or a postgresql:// URL)")
    pairs = args.pairs or (1 if args.nodes == 1 else 2 * args.nodes)
    runs: list[common.Run] = []
    fsync = None
    for _ in range(args.runs):
        for sync in args.sync or ["full"]:
            with servers.target(args, sync, *SERVER_FLAGS) as target:
                fsync = fsync or (common.fsync_ms(target.data_dir) if target.data_dir else None)

                def work(tick: Callable[[int], None], _: object, t: servers.Target = target) -> Any:
                    return _pairs(t, pairs, messages=messages, window=args.window, tick=tick)

                label = f"session send {sync}"
                total = pairs * messages
                runs.append(_measure(target, _system(args, sync), total, label, work, args.timeout))
        if args.relay:
            with servers.relay_target(args) as relay:

                def on_relay(tick: Callable[[int], None], _: object, t: servers.Target = relay) -> Any:
                    return _pairs(t, pairs, messages=messages, window=args.window, tick=tick)

                runs.append(_measure(relay, RELAY, pairs * messages, "relay send", on_relay, args.timeout))
        if args.mqtt:
            from dmds.bench import mosquitto, mqtt  # noqa: PLC0415 - only with --mqtt

            with mosquitto.mosquitto() as broker:
                runs.append(mqtt.send_once(broker, messages, args.window, args.timeout))
        if args.nats:
            from dmds.bench import nats, nats_server  # noqa: PLC0415 - only with --nats (nats-py)

            with nats_server.nats_server() as server:
                runs.append(nats.send_once(server, messages, args.window, args.timeout))
    return common.Result(
        workload="send",
        params={
            "protocol": "session",
            "pairs": pairs,
            "messages": messages,
            "window": args.window,
            "nodes": args.nodes,
            "store": "postgresql" if args.store else "sqlite",
        },
        runs=runs,
        checked="every message delivered exactly once, in order, with its text; one Delivered receipt "
        "each (a receipt range counts for each of the sender's ids in it); acknowledged (Accepted) "
        "only after its commit",
        fsync_ms=fsync,
    )


def run_queue(args: argparse.Namespace) -> common.Result:
    runs: list[common.Run] = []
    fsync = None
    for _ in range(args.runs):
        for sync in args.sync or ["full"]:
            extra = (*SERVER_FLAGS, "--max-stored-messages", str(max(10000, args.messages)))
            with servers.target(args, sync, *extra) as target:
                fsync = fsync or (common.fsync_ms(target.data_dir) if target.data_dir else None)

                def work(
                    tick: Callable[[int], None], mark: Callable[[], None], t: servers.Target = target
                ) -> Any:
                    return _queue(
                        t.host,
                        t.node_port(0),
                        messages=args.messages,
                        window=500,
                        tick=tick,
                        mark=mark,
                        recipient_port=t.node_port(1),
                    )

                label = f"session queue {sync}"
                runs.append(_measure(target, _system(args, sync), args.messages, label, work, args.timeout))
        if args.relay:
            with servers.relay_target(args) as relay:

                def drain(
                    tick: Callable[[int], None], mark: Callable[[], None], t: servers.Target = relay
                ) -> Any:
                    port = t.node_port(0)
                    return _queue(t.host, port, messages=args.messages, window=500, tick=tick, mark=mark)

                runs.append(_measure(relay, RELAY, args.messages, "relay queue", drain, args.timeout))
        if args.mqtt:
            from dmds.bench import mosquitto, mqtt  # noqa: PLC0415 - only with --mqtt

            with mosquitto.mosquitto() as broker:
                runs.append(mqtt.queue_once(broker, args.messages, args.timeout))
        if args.nats:
            from dmds.bench import nats, nats_server  # noqa: PLC0415 - only with --nats (nats-py)

            with nats_server.nats_server() as server:
                runs.append(nats.queue_once(server, args.messages, args.timeout))
    return common.Result(
        workload="queue",
        params={
            "protocol": "session",
            "messages": args.messages,
            "nodes": args.nodes,
            "store": "postgresql" if args.store else "sqlite",
        },
        runs=runs,
        checked="every stored message delivered exactly once after login, in order, with its text; "
        "timed from the TCP connect to the last message",
        fsync_ms=fsync,
    )
