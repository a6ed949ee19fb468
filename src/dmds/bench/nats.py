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
import time
import uuid
from dataclasses import dataclass, field
from functools import partial

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import DEFAULT_JS_SUB_PENDING_MSGS_LIMIT, JetStreamContext
from rich.progress import Progress

from dmds.bench import common
from dmds.bench.nats_server import Server

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


@dataclass
class _Watch:
    """A connection's asynchronous errors (a slow consumer, a protocol error) and its closing."""

    problems: list[str] = field(default_factory=list)
    closed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def errors(self) -> int:
        return len(self.problems)

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


def _result(
    server: Server,
    failures: list[str],
    parts: list[common.Checked],
    *,
    received: int = 0,
    seconds: float = 0.0,
    meter: common.CpuMeter | None = None,
) -> common.Run:
    """The Run: errors count every failure, every bad message or ack and every client error; a few
    are kept in words."""
    return common.checked_run(
        server.system,
        failures,
        parts,
        kept=PROBLEMS_KEPT,
        received=received,
        seconds=seconds,
        meter=meter,
        extra={"fsync_per_message": server.fsync_per_message},
    )


async def _settle(client: Client, js: JetStreamContext, names: _Names, failure: str | None) -> list[str]:
    """What went wrong at the end of a timed part: `failure`, or else (once the last ack is out)
    a stream the server did not empty."""
    if failure is not None:
        return [failure]
    await client.flush(timeout=int(HANDSHAKE_TIMEOUT_S))  # the last ack, out
    left = await _settled(js, names)
    return [left] if left is not None else []


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

        meter = common.CpuMeter(server.cpu)
        meter.start()
        start = time.perf_counter()
        task = asyncio.create_task(publisher.run())
        failure = await _until(done, [sub_watch, pub_watch], limit_s, task)
        seconds = time.perf_counter() - start
        meter.stop()
        task.cancel()
        done.cancel()
        if failure is not None:
            failure = f"{failure}: {receiver.received} of {messages} received, {publisher.acked} acks"
        failures = await _settle(sub_client, sub_js, names, failure)
    finally:
        await _close(pub_client, sub_client)
    parts: list[common.Checked] = [receiver, publisher, sub_watch, pub_watch]
    run = _result(server, failures, parts, received=receiver.received, seconds=seconds, meter=meter)
    run.latency_ms = common.latency_ms(receiver.arrivals, publisher.sent_at)
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
            return _result(server, failures, [publisher, admin_watch])

        bar.reset(task_id, description="nats queue: draining", total=messages)
        receiver = _Receiver(messages)
        drained: asyncio.Future[None] = loop.create_future()
        handler = _Subscriber(receiver, drained, bar)
        meter = common.CpuMeter(server.cpu)
        meter.start()
        start = time.perf_counter()
        # Timed from the connect, as Mosquitto's drain is from CONNECT and dmds's from the TCP connect.
        client, watch = await _connect(server, "dmds-bench-subscriber")
        try:
            await _subscribe(client.jetstream(timeout=HANDSHAKE_TIMEOUT_S), info, handler, messages)
            failure = await _until(drained, [watch], max(0.0, deadline - time.monotonic()))
            seconds = time.perf_counter() - start
            meter.stop()
            if failure is not None:
                failure = f"draining {failure}: {receiver.received} of {messages} received"
            failures = await _settle(client, js, names, failure)
        finally:
            await _close(client)
    finally:
        await _close(admin)
    parts: list[common.Checked] = [receiver, publisher, admin_watch, watch]
    return _result(server, failures, parts, received=receiver.received, seconds=seconds, meter=meter)


def send_once(server: Server, messages: int, window: int, timeout: float) -> common.Run:
    """One `send` run against `server`: `messages` JetStream publishes, at most `window` unacknowledged."""
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    return common.run_bounded(
        "nats send", messages, timeout, partial(_send, server, messages, window, timeout)
    )


def queue_once(server: Server, messages: int, timeout: float) -> common.Run:
    """One `queue` run against `server`: `messages` stored for a consumer nobody reads, then drained.
    `timeout` bounds the filling and the drain together."""
    return common.run_bounded("nats queue", messages, timeout, partial(_queue, server, messages, timeout))
