"""`dmds bench mqtt`: the session benches' send and queue workloads against Mosquitto, for comparison.

Both workloads use one subscriber with a persistent session (clean session off, fixed client id,
QoS 1) and one publisher, like dmds's one recipient and one sender:

- `send`: the publisher pipelines N QoS-1 PUBLISHes with at most `window` unacknowledged (no PUBACK
  yet); the subscriber PUBACKs what it receives. Timed from the first PUBLISH until the subscriber
  has every message and the publisher every PUBACK. Latency: PUBLISH written to message read.
- `queue`: the subscriber subscribes and leaves; the publisher publishes N messages (all PUBACKed)
  while it is away; the subscriber comes back, and the drain is timed from its CONNECT to the last
  message (PUBACKed as they arrive).

Checked: every message arrives exactly once, in order, with its payload (`message N`), and every
PUBACK comes back in order. Mosquitto acknowledges a PUBLISH from memory: `persistence true` saves
its in-memory database at autosave and at shutdown, with no fsync before the PUBACK, whereas dmds
acknowledges after its commit. The temporary directory's fsync time is reported for scale.

The generator is a small MQTT 3.1.1 client on asyncio/uvloop (CONNECT/CONNACK, SUBSCRIBE/SUBACK,
PUBLISH, PUBACK, DISCONNECT), both clients on one loop in this process, instead of paho-mqtt,
because paho was the limit. Measured on the 2-vCPU bench machine, send of 20,000 messages with a
window of 500 (paho's `max_inflight_messages_set(500)`, unlimited queue, the next publish from
`on_publish`, `loop_start` threads):

- paho, both clients in one process: ~8.4k msg/s, the generator at 110% CPU (two loop threads and
  the GIL), Mosquitto at 15%: ~130 us of generator CPU per message;
- paho, publisher and subscriber in two processes: ~15.5k msg/s, the publisher at 97% of a core,
  the subscriber at ~55%, Mosquitto at 26%: ~100 us per message;
- this client: 37-42k msg/s, the generator at ~37%, Mosquitto at ~55-60% (the rest of the two
  cores busy elsewhere): ~10 us of generator CPU per message against Mosquitto's ~14 us.

paho reads every packet with several `recv` calls (one byte for the type, one per length byte,
then the rest), writes one packet per `send`, and takes locks around every callback. This client
parses whatever one read brings and answers it with one write (all the PUBACKs of a read; all the
PUBLISHes a read's PUBACKs allow), so the broker, not the generator, sets the pace; both CPU
shares are in every `Run` to show it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from functools import partial

from rich.progress import Progress

from dmds.bench import common
from dmds.bench.mosquitto import Broker, broker_for
from dmds.bench.mqtt_wire import (
    CONNACK,
    MAX_PACKET_ID,
    Client,
    connect,
    connect_packet,
    disconnect,
    packet_id,
    persistent_subscriber,
    puback_packet,
    publish_packet,
    utf8_string,
)

#: Publishes in flight while the queue workload fills the offline queue (not timed).
FILL_WINDOW = 1000
#: Problems kept in a Run's `extra` (the count is in `errors`).
PROBLEMS_KEPT = 5

CHECKED = (
    "every message arrived exactly once, in order, with its payload; every PUBACK came back, in order. "
    "Mosquitto PUBACKs from memory: persistence saves its in-memory database at autosave and "
    "shutdown, never fsyncs before acknowledging"
)


@dataclass
class _Receiver:
    """What the subscriber checks: message N carries `message N`, each arrives once, in order."""

    expected: int
    received: int = 0  # in order, so far
    problems: list[str] = field(default_factory=list)
    errors: int = 0
    arrivals: list[float] = field(default_factory=list)  # perf_counter of each message, by sequence

    def take(self, batch: list[tuple[int, bytes]], now: float) -> bytes:
        """Checks a read's messages; returns their PUBACKs, as one write."""
        acks = bytearray()
        for pid, payload in batch:
            acks += puback_packet(pid)  # the broker's own packet id for this delivery
            nxt = self.received + 1
            if payload == b"message %d" % nxt:
                self.received = nxt
                self.arrivals.append(now)
            else:
                self.errors += 1
                if len(self.problems) < PROBLEMS_KEPT:
                    self.problems.append(f"expected message {nxt}, got {payload[:40]!r}")
        return bytes(acks)

    def done(self) -> bool:
        return self.received >= self.expected


@dataclass
class _Publisher:
    """Publishes `messages` QoS-1 messages, at most `window` without a PUBACK; checks the PUBACKs'
    order (a broker MUST send them in the order of the PUBLISHes, MQTT 3.1.1 section 4.6)."""

    client: Client
    topic: str
    messages: int
    window: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # perf_counter of each publish, by sequence

    def __post_init__(self) -> None:
        self.topic_field = utf8_string(self.topic)

    def fill(self) -> None:
        """Publishes as many as the window allows, in one write."""
        upto = min(self.messages, self.acked + self.window)
        if upto <= self.sent:
            return
        topic_field = self.topic_field
        packets = [
            publish_packet(topic_field, packet_id(n), b"message %d" % n)
            for n in range(self.sent + 1, upto + 1)
        ]
        now = time.perf_counter()
        self.sent_at.extend([now] * len(packets))
        self.sent = upto
        self.client.write(b"".join(packets))

    def take(self, pids: list[int]) -> None:
        for pid in pids:
            self.acked += 1
            if pid != packet_id(self.acked):
                self.errors += 1
                if len(self.problems) < PROBLEMS_KEPT:
                    self.problems.append(f"PUBACK {pid} where {packet_id(self.acked)} was due")
        if self.acked > self.sent:
            self.errors += 1
            self.problems.append(f"{self.acked - self.sent} PUBACKs for nothing sent")
        self.fill()

    def done(self) -> bool:
        return self.acked >= self.messages


def _ids(tag: str) -> tuple[str, str, str]:
    """Client ids (subscriber, publisher) and a topic of their own for one run."""
    run = uuid.uuid4().hex[:8]
    return f"dmds-sub-{os.getpid()}-{tag}", f"dmds-pub-{run}", f"dmds-bench/{tag}/{run}"


async def _until(done: asyncio.Future[None], *clients: Client, limit_s: float) -> str | None:
    """Waits for `done`; returns why it did not come (timeout, a lost connection), else None."""
    finished, _ = await asyncio.wait(
        [done, *(c.closed for c in clients)], timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
    )
    if done in finished:
        return None
    return "the broker closed a connection" if finished else f"timed out after {limit_s:g} s"


def _result(
    broker: Broker,
    meter: common.CpuMeter,
    failures: list[str],
    parts: list[common.Checked],
    timed: tuple[int, float] = (0, 0.0),
) -> common.Run:
    """The Run: errors count every failure and every bad message or PUBACK; a few are kept in words.
    `timed`: the messages received and the seconds of the timed part, if it was reached."""
    return common.checked_run(
        broker.system, failures, parts, kept=PROBLEMS_KEPT, received=timed[0], seconds=timed[1], meter=meter
    )


async def _send(broker: Broker, messages: int, window: int, limit_s: float, bar: Progress) -> common.Run:
    sub_id, pub_id, topic = _ids("send")
    subscriber = await persistent_subscriber(broker, sub_id, topic)
    publisher_client, _ = await connect(broker, pub_id, clean_session=True)
    publisher = _Publisher(publisher_client, topic, messages, window)
    receiver = _Receiver(messages)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = bar.task_ids[0]

    def check_done() -> None:
        if receiver.done() and publisher.done() and not done.done():
            done.set_result(None)

    def on_publishes(batch: list[tuple[int, bytes]]) -> None:
        subscriber.write(receiver.take(batch, time.perf_counter()))
        bar.update(task, completed=receiver.received)
        check_done()

    def on_pubacks(pids: list[int]) -> None:
        publisher.take(pids)
        check_done()

    subscriber.on_publishes, publisher_client.on_pubacks = on_publishes, on_pubacks
    meter = common.CpuMeter(broker.cpu)
    meter.start()
    start = time.perf_counter()
    publisher.fill()
    failure = await _until(done, subscriber, publisher_client, limit_s=limit_s)
    seconds = time.perf_counter() - start
    meter.stop()
    failures = []
    if failure is not None:
        failures.append(f"{failure}: {receiver.received} of {messages} received, {publisher.acked} PUBACKs")
    for client in (publisher_client, subscriber):
        await disconnect(client, wait=failure is None)
    parts: list[common.Checked] = [receiver, publisher, subscriber, publisher_client]
    run = _result(broker, meter, failures, parts, (receiver.received, seconds))
    run.latency_ms = common.latency_ms(receiver.arrivals, publisher.sent_at)
    return run


async def _queue(broker: Broker, messages: int, limit_s: float, bar: Progress) -> common.Run:
    sub_id, pub_id, topic = _ids("queue")
    deadline = time.monotonic() + limit_s
    loop = asyncio.get_running_loop()
    subscriber = await persistent_subscriber(broker, sub_id, topic)
    await disconnect(subscriber)  # away: what is published now waits in its session

    publisher_client, _ = await connect(broker, pub_id, clean_session=True)
    publisher = _Publisher(publisher_client, topic, messages, FILL_WINDOW)
    filled: asyncio.Future[None] = loop.create_future()
    task = bar.task_ids[0]
    bar.update(task, description="mosquitto queue: filling")

    def on_pubacks(pids: list[int]) -> None:
        publisher.take(pids)
        bar.update(task, completed=publisher.acked)
        if publisher.done() and not filled.done():
            filled.set_result(None)

    publisher_client.on_pubacks = on_pubacks
    publisher.fill()
    failure = await _until(filled, publisher_client, limit_s=max(0.0, deadline - time.monotonic()))
    await disconnect(publisher_client, wait=failure is None)
    meter = common.CpuMeter(broker.cpu)
    if failure is not None:
        failures = [f"filling the queue {failure}: {publisher.acked} of {messages} PUBACKs"]
        return _result(broker, meter, failures, [publisher, publisher_client])

    bar.reset(task, description="mosquitto queue: draining", total=messages)
    receiver = _Receiver(messages)
    done: asyncio.Future[None] = loop.create_future()
    _, client = await loop.create_connection(Client, broker.host, broker.port)

    def on_publishes(batch: list[tuple[int, bytes]]) -> None:
        client.write(receiver.take(batch, time.perf_counter()))
        bar.update(task, completed=receiver.received)
        if receiver.done() and not done.done():
            done.set_result(None)

    client.on_publishes = on_publishes
    connack = client.expect(CONNACK)
    meter.start()
    start = time.perf_counter()
    client.write(connect_packet(sub_id, clean_session=False))
    failure = await _until(done, client, limit_s=max(0.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - start
    meter.stop()
    failures = []
    if failure is not None:
        failures.append(f"draining {failure}: {receiver.received} of {messages} received")
    if connack.done() and connack.exception() is None:
        flags, code = connack.result()
        if code != 0 or not flags & 1:  # the session, with its queue, must have been kept
            failures.append(f"CONNACK: return code {code}, session present {flags & 1}")
    await disconnect(client, wait=failure is None)
    parts: list[common.Checked] = [receiver, publisher, client]
    return _result(broker, meter, failures, parts, (receiver.received, seconds))


def send_once(broker: Broker, messages: int, window: int, timeout: float) -> common.Run:
    """One `send` run against `broker`: `messages` QoS-1 messages, at most `window` unacknowledged."""
    if not 0 < window <= MAX_PACKET_ID:
        raise ValueError(f"window must be 1..{MAX_PACKET_ID} (MQTT packet ids), not {window}")
    return common.run_bounded(
        "mosquitto send", messages, timeout, partial(_send, broker, messages, window, timeout)
    )


def queue_once(broker: Broker, messages: int, timeout: float) -> common.Run:
    """One `queue` run against `broker`: `messages` queued for the offline subscriber, then drained.
    `timeout` bounds the filling and the drain together."""
    return common.run_bounded(
        "mosquitto queue", messages, timeout, partial(_queue, broker, messages, timeout)
    )


def run(args: argparse.Namespace) -> common.Result:
    """`dmds bench mqtt {send,queue}`: `--runs` runs of one workload against one broker."""
    # Counts and durations are checked for every workload by `dmds.bench.cli`.
    if args.workload == "send" and not 0 < args.window <= MAX_PACKET_ID:
        raise SystemExit(f"--window must be 1..{MAX_PACKET_ID} (MQTT packet ids)")
    runs: list[common.Run] = []
    with broker_for(args) as broker:
        for _ in range(args.runs):
            if args.workload == "send":
                runs.append(send_once(broker, args.messages, args.window, args.timeout))
            else:
                runs.append(queue_once(broker, args.messages, args.timeout))
        fsync = common.fsync_ms(broker.data_dir) if broker.data_dir is not None else None
    params: dict[str, object] = {"messages": args.messages}
    if args.workload == "send":
        params["window"] = args.window
    params |= {
        "broker": f"{broker.host}:{broker.port}",
        "qos": 1,
        "durability": "PUBACK from memory, no fsync (persistence saved at autosave and shutdown)",
        "client": "asyncio/uvloop MQTT 3.1.1, publisher and subscriber in one process",
    }
    return common.Result(
        workload=f"mqtt-{args.workload}", params=params, runs=runs, checked=CHECKED, fsync_ms=fsync
    )
