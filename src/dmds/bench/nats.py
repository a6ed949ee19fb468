"""NATS JetStream beside Mosquitto in `dmds bench send|queue --nats`: the same two workloads.

One stream with file storage and interest retention (a message is removed once its consumer has
acknowledged it, as a store-and-forward server forgets a delivered message) and one durable push
consumer with `AckPolicy.ALL` (one ack settles everything up to it, like dmds's range ack) and no
limit on unacknowledged deliveries (like Mosquitto's `max_inflight_messages 0`):

- `send`: the publisher pipelines N JetStream publishes (`publish_async`) with at most `window`
  publish acks outstanding; the subscriber acks what it receives, once per batch the client hands
  over. Timed from the first publish until the subscriber has every message and the publisher every
  publish ack. Latency: publish written to message handed to the subscriber.
- `queue`: the consumer exists but nobody is subscribed to its deliver subject, so nothing is
  delivered; the publisher publishes N messages (all acked); then a new connection subscribes and
  drains them, timed from its connect to the last message (acked as they arrive).

Checked: every message arrives exactly once (delivery count 1), in order (stream sequence N),
with its payload (`message N`); every publish ack comes back, naming the stream and sequence N; and,
after the timed part, the stream empties, i.e. the server took the subscriber's acks.

Durability: nats-server 2.9.10, Debian's, cannot fsync before the publish ack. Its JetStream block
has no `sync_interval` option (`nats-server -t` rejects it: "unknown field"); the option, with
`sync_interval: always` for an fsync per write, arrived in 2.10.0 (nats-io/nats-server#4483). In
2.9.10 a stream's file store is flushed in place (server/stream.go: `AsyncFlush = false`), so each
message is written to its block file with one pwrite (to the page cache) before the ack, and fsynced
by a timer every 2 minutes (`SyncInterval = 2 * time.Minute`; filestore.go `syncBlocks`). Traced
here (strace -f): 5,000 publishes made 5,003 pwrite64 calls and no fsync or fdatasync. So the
label says "no fsync per message" and, like Mosquitto, these figures are not a durable path's. A
newer server that accepts `sync_interval: always` (probed with `-t`) is run with it, and labelled
"fsync per message".

The client is nats-py (the `bench` extra), both connections on one uvloop loop in this process.
It, not the server, sets the pace: on the 2-vCPU bench machine, send of 20,000 with a window of
500 ran at ~14k msg/s with the generator at ~80% of a core and nats-server at ~30% (~21 us of
server CPU per message), the queue drain of 10,000 at ~68k msg/s with the generator at ~87%. So
compare NATS by its server CPU per message more than by its rate; both CPU shares are in every Run.
(Profiled: about a quarter of the generator's time is nats-py's protocol parser; the checks'
parsing of each message's metadata, ~7%.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import DEFAULT_JS_SUB_PENDING_MSGS_LIMIT, JetStreamContext
from rich.progress import Progress

from dmds.bench import common, servers

NATS_SERVER = "/usr/sbin/nats-server"  # Debian's package puts it in sbin, like Mosquitto
#: Seconds for the connect handshake and each JetStream API request (stream, consumer, info).
HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds the server has, after the timed part, to have applied the subscriber's last ack.
SETTLE_TIMEOUT_S = 10.0
#: Publishes in flight while the queue workload fills the stream (not timed), as for Mosquitto.
FILL_WINDOW = 1000
#: The subscriber acks at least this often, even while the client keeps handing it messages: the
#: server redelivers what stays unacknowledged for longer than `ack_wait` (30 s).
ACK_AT_LEAST_EVERY = 1000
#: Problems kept in a Run's `extra` (the count is in `errors`).
PROBLEMS_KEPT = 5


@dataclass(frozen=True)
class Server:
    """A nats-server this module started, with JetStream on file storage in a temporary directory."""

    host: str
    port: int
    pid: int
    version: str  # "2.9.10", or "" if unknown
    fsync_per_message: bool  # `sync_interval: always` (2.10 and later)
    data_dir: Path

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def system(self) -> str:
        name = f"NATS JetStream {self.version}" if self.version else "NATS JetStream"
        return f"{name} (file, {'fsync' if self.fsync_per_message else 'no fsync'} per message)"

    def cpu(self) -> float:
        return servers.cpu_seconds(self.pid)


def server_version(binary: str = NATS_SERVER) -> str:
    """The version `nats-server --version` prints ("nats-server: v2.9.10"), "" if it says none."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"v(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    return match.group(1) if match else ""


def _config(data_dir: Path, *, sync_always: bool) -> str:
    """Defaults but for loopback, a port of the server's choosing (read from its log: no race for a
    free port), and JetStream's store in `data_dir`. JSON strings are valid NATS config strings."""
    lines = [
        "host: 127.0.0.1",
        "port: -1",
        "jetstream {",
        f"  store_dir: {json.dumps(str(data_dir / 'store'))}",
        *(["  sync_interval: always"] if sync_always else []),
        "}",
    ]
    return "\n".join(lines) + "\n"


def sync_always_supported(binary: str, directory: Path) -> bool:
    """Whether this nats-server accepts `sync_interval: always` (an fsync per write): the config
    test (`-t`) fails on an unknown field, as 2.9 does on this one."""
    conf = directory / "probe.conf"
    conf.write_text(_config(directory, sync_always=True))
    out = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, timeout=10, check=False)
    return out.returncode == 0


@contextmanager
def nats_server(parent: Path | None = None) -> Iterator[Server]:
    """A nats-server on 127.0.0.1 with JetStream's file store in a temporary directory under
    `parent` (its log there too), stopped at the end."""
    if not os.access(NATS_SERVER, os.X_OK):
        raise RuntimeError(f"no nats-server at {NATS_SERVER}: install the Debian package (make system-deps)")
    version = server_version()
    with tempfile.TemporaryDirectory(prefix="dmds-bench-nats-", dir=parent) as tmp:
        data_dir = Path(tmp)
        sync_always = sync_always_supported(NATS_SERVER, data_dir)
        conf = data_dir / "nats-server.conf"
        conf.write_text(_config(data_dir, sync_always=sync_always))
        # "Server is ready" comes after JetStream is up; servers.start bounds the wait and raises
        # with the log if the line never comes.
        proc, port = servers.start(
            [NATS_SERVER, "-c", str(conf)],
            r"Listening for client connections on 127\.0\.0\.1:(\d+)(?s:.*)Server is ready",
            data_dir / "nats-server.log",
        )
        try:
            yield Server("127.0.0.1", port, proc.pid, version, sync_always, data_dir)
        finally:
            servers.stop(proc)


@dataclass
class _Watch:
    """A connection's asynchronous errors (a slow consumer, a protocol error) and its closing."""

    problems: list[str] = field(default_factory=list)
    closed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def on_error(self, exc: Exception) -> None:
        self.problems.append(f"client error: {exc!r}")

    async def on_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _connect(server: Server, name: str) -> tuple[Client, _Watch]:
    """A connection that does not reconnect: a lost connection ends the run as a failure."""
    watch = _Watch()
    client = Client()
    await client.connect(
        server.url,
        name=name,
        allow_reconnect=False,
        connect_timeout=int(HANDSHAKE_TIMEOUT_S),
        error_cb=watch.on_error,
        closed_cb=watch.on_closed,
    )
    return client, watch


@dataclass(frozen=True)
class _Names:
    """A stream, its one subject and its durable consumer, of one run."""

    stream: str
    subject: str
    consumer: str

    @classmethod
    def fresh(cls, tag: str) -> _Names:
        run = uuid.uuid4().hex[:8]
        return cls(f"DMDS_BENCH_{tag.upper()}_{run}", f"dmds.bench.{tag}.{run}", f"dmds-sub-{tag}-{run}")


async def _stream_and_consumer(js: JetStreamContext, names: _Names, deliver: str) -> api.ConsumerInfo:
    await js.add_stream(
        api.StreamConfig(
            name=names.stream,
            subjects=[names.subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.INTEREST,
            num_replicas=1,
        )
    )
    return await js.add_consumer(
        names.stream,
        api.ConsumerConfig(
            durable_name=names.consumer,
            deliver_subject=deliver,
            ack_policy=api.AckPolicy.ALL,
            max_ack_pending=-1,  # no limit: the publisher's window governs, as for Mosquitto
        ),
    )


@dataclass
class _Receiver:
    """What the subscriber checks: message N is stream sequence N, carries `message N`, and is
    delivered once, each in order."""

    expected: int
    received: int = 0  # in order, so far
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # perf_counter of each message, by sequence

    def take(self, msg: Msg, now: float) -> None:
        nxt = self.received + 1
        meta = msg.metadata
        if msg.data == b"message %d" % nxt and meta.sequence.stream == nxt and meta.num_delivered == 1:
            self.received = nxt
            self.arrivals.append(now)
        else:
            self.errors += 1
            if len(self.problems) < PROBLEMS_KEPT:
                self.problems.append(
                    f"expected message {nxt}, got {msg.data[:40]!r} (stream seq {meta.sequence.stream}, "
                    f"delivered {meta.num_delivered} times)"
                )

    def done(self) -> bool:
        return self.received >= self.expected


@dataclass
class _Publisher:
    """Publishes `messages` messages, at most the JetStream context's `publish_async_max_pending`
    without their publish ack; checks that ack N names the stream and sequence N."""

    js: JetStreamContext
    names: _Names
    messages: int
    acked: int = 0  # publish acks that came back
    answered: int = 0  # those and the publishes that failed (an error from the server)
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # perf_counter of each publish, by sequence
    answers: list[asyncio.Future[None]] = field(default_factory=list)  # set when every publish is answered

    async def run(self) -> None:
        subject = self.names.subject
        for n in range(1, self.messages + 1):
            self.sent_at.append(time.perf_counter())
            # Waits only when the window is full: the semaphore is released as each ack comes.
            future = await self.js.publish_async(subject, b"message %d" % n)
            future.add_done_callback(partial(self._take, n))

    def _take(self, n: int, future: asyncio.Future[api.PubAck]) -> None:
        problem = None
        self.answered += 1
        if future.cancelled():
            problem = f"publish {n}: no ack (cancelled)"
        elif (exc := future.exception()) is not None:
            problem = f"publish {n}: {exc!r}"
        else:
            ack = future.result()
            self.acked += 1
            if ack.stream != self.names.stream or ack.seq != n or ack.duplicate:
                problem = f"publish {n}: ack {ack.stream} seq {ack.seq} duplicate {ack.duplicate}"
        if problem is not None:
            self.errors += 1
            if len(self.problems) < PROBLEMS_KEPT:
                self.problems.append(problem)
        if self.answered >= self.messages:
            for waiter in self.answers:
                if not waiter.done():
                    waiter.set_result(None)


@dataclass
class _Subscriber:
    """The push subscription's callback: checks each message, acks the last one of each batch the
    client hands over (AckPolicy.ALL settles everything up to it), sets `done` after the last."""

    receiver: _Receiver
    done: asyncio.Future[None]
    bar: Progress | None = None
    subscription: JetStreamContext.PushSubscription | None = None  # set once subscribed
    unacked: int = 0

    async def on_message(self, msg: Msg) -> None:
        receiver = self.receiver
        receiver.take(msg, time.perf_counter())
        self.unacked += 1
        if (
            receiver.done()
            or self.unacked >= ACK_AT_LEAST_EVERY
            or (self.subscription is not None and self.subscription.pending_msgs == 0)
        ):
            self.unacked = 0
            await msg.ack()
            if self.bar is not None:
                self.bar.update(self.bar.task_ids[0], completed=receiver.received)
        if receiver.done() and not self.done.done():
            self.done.set_result(None)


async def _subscribe(
    js: JetStreamContext, info: api.ConsumerInfo, handler: _Subscriber, messages: int
) -> None:
    handler.subscription = await js.subscribe_bind(
        info.stream_name,
        info.config,
        info.name,
        cb=handler.on_message,  # a coroutine function: nats-py checks
        manual_ack=True,
        # The whole queue may arrive before the callback catches up: room for all of it.
        pending_msgs_limit=max(DEFAULT_JS_SUB_PENDING_MSGS_LIMIT, messages),
    )


async def _until(
    done: asyncio.Future[None], watches: list[_Watch], limit_s: float, task: asyncio.Task[None] | None = None
) -> str | None:
    """Waits for `done`; returns why it did not come (timeout, a lost connection, the publishing
    failed), else None."""
    deadline = time.monotonic() + limit_s
    waiting: set[asyncio.Future[None]] = {done, *(w.closed for w in watches)}
    if task is not None:
        waiting.add(task)
    while True:
        finished, _ = await asyncio.wait(
            waiting, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        if done in finished:
            return None
        if not finished:
            return f"timed out after {limit_s:g} s"
        if task is not None and task in finished:
            if (exc := task.exception()) is not None:
                return f"publishing failed: {exc!r}"
            waiting.discard(task)  # every publish written: now wait for the rest
            continue
        return "the server closed a connection"


async def _settled(js: JetStreamContext, names: _Names) -> str | None:
    """None once the stream is empty: interest retention removes a message when the consumer's ack
    covers it, so an empty stream means the server has every ack. Else what is left."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        info = await js.stream_info(names.stream)
        if info.state.messages == 0:
            return None
        if time.monotonic() > deadline:
            left = info.state.messages
            return f"{left} messages still unacknowledged {SETTLE_TIMEOUT_S:g} s after the last one"
        await asyncio.sleep(0.02)


@dataclass
class _Meter:
    """CPU of the server and of this process over the timed part."""

    server: Server
    server_cpu: float = 0.0
    generator_cpu: float = 0.0

    def start(self) -> None:
        self.server_cpu, self.generator_cpu = self.server.cpu(), common.own_cpu_seconds()

    def stop(self) -> None:
        self.server_cpu = self.server.cpu() - self.server_cpu
        self.generator_cpu = common.own_cpu_seconds() - self.generator_cpu


def _result(
    server: Server,
    *,
    received: int,
    seconds: float,
    meter: _Meter | None,
    failures: list[str],
    parts: list[_Receiver | _Publisher | _Watch],
) -> common.Run:
    """The Run: errors count every failure, every bad message or ack and every client error; a few
    are kept in words."""
    errors = len(failures)
    problems = list(failures)
    for part in parts:
        errors += len(part.problems) if isinstance(part, _Watch) else part.errors
        problems += part.problems
    return common.Run(
        system=server.system,
        count=received,
        seconds=seconds,
        server_cpu_s=meter.server_cpu if meter is not None else None,
        generator_cpu_s=meter.generator_cpu if meter is not None else None,
        errors=errors,
        extra={"fsync_per_message": server.fsync_per_message, "problems": problems[:PROBLEMS_KEPT]},
    )


async def _close(*clients: Client) -> None:
    for client in clients:
        if not client.is_closed:
            await client.close()


async def _send(server: Server, messages: int, window: int, limit_s: float, bar: Progress) -> common.Run:
    names = _Names.fresh("send")
    loop = asyncio.get_running_loop()
    sub_client, sub_watch = await _connect(server, "dmds-bench-subscriber")
    pub_client, pub_watch = await _connect(server, "dmds-bench-publisher")
    try:
        sub_js = sub_client.jetstream(timeout=HANDSHAKE_TIMEOUT_S)
        info = await _stream_and_consumer(sub_js, names, sub_client.new_inbox())
        receiver = _Receiver(messages)
        received: asyncio.Future[None] = loop.create_future()
        handler = _Subscriber(receiver, received, bar)
        await _subscribe(sub_js, info, handler, messages)
        pub_js = pub_client.jetstream(timeout=HANDSHAKE_TIMEOUT_S, publish_async_max_pending=window)
        publisher = _Publisher(pub_js, names, messages)
        answered: asyncio.Future[None] = loop.create_future()
        publisher.answers.append(answered)

        async def both() -> None:
            await received
            await answered

        done = asyncio.create_task(both())

        meter = _Meter(server)
        meter.start()
        start = time.perf_counter()
        task = asyncio.create_task(publisher.run())
        failure = await _until(done, [sub_watch, pub_watch], limit_s, task)
        seconds = time.perf_counter() - start
        meter.stop()
        task.cancel()
        done.cancel()
        failures = []
        if failure is not None:
            failures.append(f"{failure}: {receiver.received} of {messages} received, {publisher.acked} acks")
        else:
            await sub_client.flush(timeout=int(HANDSHAKE_TIMEOUT_S))  # the last ack, out
            if (left := await _settled(sub_js, names)) is not None:
                failures.append(left)
    finally:
        await _close(pub_client, sub_client)
    run = _result(
        server,
        received=receiver.received,
        seconds=seconds,
        meter=meter,
        failures=failures,
        parts=[receiver, publisher, sub_watch, pub_watch],
    )
    # Both lists are by sequence number, from 1: arrival minus publish of the same message.
    run.latency_ms = common.percentiles(
        [arrived - sent for arrived, sent in zip(receiver.arrivals, publisher.sent_at, strict=False)]
    )
    return run


async def _queue(server: Server, messages: int, limit_s: float, bar: Progress) -> common.Run:
    names = _Names.fresh("queue")
    deadline = time.monotonic() + limit_s
    loop = asyncio.get_running_loop()
    task_id = bar.task_ids[0]
    admin, admin_watch = await _connect(server, "dmds-bench-publisher")
    try:
        js = admin.jetstream(timeout=HANDSHAKE_TIMEOUT_S, publish_async_max_pending=FILL_WINDOW)
        # Its deliver subject is an inbox nobody subscribes to until the drain: no interest, no delivery.
        info = await _stream_and_consumer(js, names, admin.new_inbox())
        bar.update(task_id, description="nats queue: filling")
        publisher = _Publisher(js, names, messages)
        filled: asyncio.Future[None] = loop.create_future()
        publisher.answers.append(filled)
        publisher_task = asyncio.create_task(publisher.run())
        failure = await _until(filled, [admin_watch], max(0.0, deadline - time.monotonic()), publisher_task)
        publisher_task.cancel()
        if failure is None:
            state = await js.consumer_info(names.stream, names.consumer)
            if state.delivered.stream_seq != 0 or state.num_pending != messages:
                failure = f"delivered while away: {state.delivered}, {state.num_pending} pending"
        if failure is not None:
            failures = [f"filling the stream {failure}: {publisher.acked} of {messages} acks"]
            return _result(
                server,
                received=0,
                seconds=0.0,
                meter=None,
                failures=failures,
                parts=[publisher, admin_watch],
            )

        bar.reset(task_id, description="nats queue: draining", total=messages)
        receiver = _Receiver(messages)
        drained: asyncio.Future[None] = loop.create_future()
        handler = _Subscriber(receiver, drained, bar)
        meter = _Meter(server)
        meter.start()
        start = time.perf_counter()
        # Timed from the connect, as Mosquitto's drain is from CONNECT and dmds's from the TCP connect.
        client, watch = await _connect(server, "dmds-bench-subscriber")
        try:
            await _subscribe(client.jetstream(timeout=HANDSHAKE_TIMEOUT_S), info, handler, messages)
            failure = await _until(drained, [watch], max(0.0, deadline - time.monotonic()))
            seconds = time.perf_counter() - start
            meter.stop()
            failures = []
            if failure is not None:
                failures.append(f"draining {failure}: {receiver.received} of {messages} received")
            else:
                await client.flush(timeout=int(HANDSHAKE_TIMEOUT_S))  # the last ack, out
                if (left := await _settled(js, names)) is not None:
                    failures.append(left)
        finally:
            await _close(client)
    finally:
        await _close(admin)
    return _result(
        server,
        received=receiver.received,
        seconds=seconds,
        meter=meter,
        failures=failures,
        parts=[receiver, publisher, admin_watch, watch],
    )


def send_once(server: Server, messages: int, window: int, timeout: float) -> common.Run:
    """One `send` run against `server`: `messages` JetStream publishes, at most `window` unacknowledged."""
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    with common.progress("nats send", messages) as bar:
        # The set-up (connections, stream, consumer) is bounded apart from the timed part.
        return uvloop.run(asyncio.wait_for(_send(server, messages, window, timeout, bar), timeout + 60))


def queue_once(server: Server, messages: int, timeout: float) -> common.Run:
    """One `queue` run against `server`: `messages` stored for a consumer nobody reads, then drained.
    `timeout` bounds the filling and the drain together."""
    with common.progress("nats queue", messages) as bar:
        return uvloop.run(asyncio.wait_for(_queue(server, messages, timeout, bar), timeout + 60))
