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
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from rich.progress import Progress

from dmds.bench import common, servers

MOSQUITTO = "/usr/sbin/mosquitto"
#: Ports tried when the free port picked for Mosquitto is taken before it binds it.
START_ATTEMPTS = 3
#: Seconds to wait for CONNACK, SUBACK, and the broker closing after DISCONNECT.
HANDSHAKE_TIMEOUT_S = 10.0
#: Publishes in flight while the queue workload fills the offline queue (not timed).
FILL_WINDOW = 1000
#: Messages Mosquitto keeps for an offline subscriber, at least (its default, 1000, drops the rest).
MAX_QUEUED = 1_000_000
#: MQTT packet identifiers are 16-bit and never 0.
MAX_PACKET_ID = 65535
#: Keep-alive asked in CONNECT: longer than any run, so that no PINGREQ is needed.
KEEPALIVE_S = 65535
#: Problems kept in a Run's `extra` (the count is in `errors`).
PROBLEMS_KEPT = 5

CHECKED = (
    "every message arrived exactly once, in order, with its payload; every PUBACK came back, in order. "
    "Mosquitto PUBACKs from memory: persistence saves its in-memory database at autosave and "
    "shutdown, never fsyncs before acknowledging"
)

# Packet types (MQTT 3.1.1, section 2.2.1) and fixed-header bytes.
_CONNACK, _PUBLISH, _PUBACK, _SUBACK = 2, 3, 4, 9
_DISCONNECT = b"\xe0\x00"
_PUBLISH_QOS1 = 0x32


@dataclass(frozen=True)
class Broker:
    """An MQTT broker to bench: one this module started (pid known) or a running one."""

    host: str
    port: int
    pid: int | None  # None for a broker the bench did not start: its CPU is not reported
    version: str  # "2.0.11", or "" if unknown
    data_dir: Path | None = None  # the started broker's persistence directory, where fsync is timed

    @property
    def system(self) -> str:
        name = f"mosquitto {self.version}" if self.version else f"mqtt {self.host}:{self.port}"
        return f"{name} (QoS 1, persistent session)"

    def cpu(self) -> float | None:
        return servers.cpu_seconds(self.pid) if self.pid is not None else None


def mosquitto_version(binary: str = MOSQUITTO) -> str:
    """The version `mosquitto -h` prints ("mosquitto version 2.0.11"), "" if it says none."""
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(port: int, data_dir: Path, max_queued: int) -> str:
    """Mosquitto's defaults but for what the workloads need. Nagle's algorithm stays on (the
    default; `set_tcp_nodelay true` measured 10-15% faster on send here): what a deployment gets."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        # The whole offline queue must fit: the default (1000) would drop messages.
        f"max_queued_messages {max_queued}",
        "max_queued_bytes 0",
        # No limit on QoS-1 messages in flight to the subscriber: the publisher's window governs.
        "max_inflight_messages 0",
        # Its log goes to a file in the temp dir (servers.start), where the listening line is read.
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot write the temp dir
    return "\n".join(lines) + "\n"


@contextmanager
def mosquitto(parent: Path | None = None, max_queued: int = MAX_QUEUED) -> Iterator[Broker]:
    """A Mosquitto on 127.0.0.1 with its persistence in a temporary directory under `parent`, which
    keeps up to `max_queued` messages for an offline subscriber."""
    if not os.access(MOSQUITTO, os.X_OK):
        raise RuntimeError(f"no Mosquitto at {MOSQUITTO}: install the Debian package (make system-deps)")
    version = mosquitto_version()
    with tempfile.TemporaryDirectory(prefix="dmds-bench-mqtt-", dir=parent) as tmp:
        data_dir = Path(tmp)
        for attempt in range(START_ATTEMPTS):
            port = _free_port()
            conf = data_dir / "mosquitto.conf"
            conf.write_text(_config(port, data_dir, max_queued))
            try:
                proc, _ = servers.start(
                    [MOSQUITTO, "-c", str(conf)],
                    rf"Opening ipv4 listen socket on port ({port})\b",
                    data_dir / f"mosquitto-{attempt}.log",
                )
                break
            except RuntimeError:  # the port was taken in between: another one
                if attempt == START_ATTEMPTS - 1:
                    raise
        try:
            yield Broker("127.0.0.1", port, proc.pid, version, data_dir)
        finally:
            servers.stop(proc)


@contextmanager
def broker_for(args: argparse.Namespace) -> Iterator[Broker]:
    """`--host`/`--port` if given (port 1883 by default), else a Mosquitto started for the bench."""
    if args.host is not None:
        yield Broker(args.host, args.port if args.port is not None else 1883, None, "")
        return
    with mosquitto(args.data_dir, max(MAX_QUEUED, args.messages)) as broker:
        yield broker


# --- MQTT 3.1.1 codec: the five packet types the workloads need ---------------------------------


def _varint(n: int) -> bytes:
    """The remaining-length encoding: 7 bits per byte, low first, high bit set on all but the last."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _string(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, *, clean_session: bool) -> bytes:
    body = _string("MQTT") + bytes([4, 0x02 if clean_session else 0]) + KEEPALIVE_S.to_bytes(2, "big")
    body += _string(client_id)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(packet_id: int, topic: str) -> bytes:
    body = packet_id.to_bytes(2, "big") + _string(topic) + b"\x01"  # requested QoS 1
    return b"\x82" + _varint(len(body)) + body


def publish_packet(topic_field: bytes, packet_id: int, payload: bytes) -> bytes:
    """A QoS-1 PUBLISH; `topic_field` is the topic already length-prefixed (`_string`)."""
    body_length = len(topic_field) + 2 + len(payload)
    return (
        bytes([_PUBLISH_QOS1]) + _varint(body_length) + topic_field + packet_id.to_bytes(2, "big") + payload
    )


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def packet_id(sequence: int) -> int:
    """The packet identifier of the `sequence`-th publish (from 1): 1..65535, then round again."""
    return (sequence - 1) % MAX_PACKET_ID + 1


class _Client(asyncio.Protocol):
    """One MQTT connection. Each read is parsed whole and handed over as one batch: the PUBLISHes
    (packet id, payload) to `on_publishes`, the PUBACKs' packet ids to `on_pubacks`, so
    that the workload answers a whole read with one write."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # CONNACK and SUBACK bodies, by packet type, for whoever asked with `expect`.
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.on_publishes: Callable[[list[tuple[int, bytes]]], None] | None = None
        self.on_pubacks: Callable[[list[int]], None] | None = None
        self.problems: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the broker closed the connection"))

    def expect(self, kind: int) -> asyncio.Future[bytes]:
        """The body of the next packet of this type (CONNACK, SUBACK), asked for before it is due."""
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[kind] = waiter
        return waiter

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        end_of_data = len(buf)
        pos = 0
        publishes: list[tuple[int, bytes]] = []
        pubacks: list[int] = []
        while end_of_data - pos >= 2:
            first = buf[pos]
            length, shift, i = 0, 0, pos + 1
            while i < end_of_data:  # remaining length: up to 4 bytes
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if byte < 0x80:
                    break
                shift += 7
            else:
                break  # the length itself is incomplete
            end = i + length
            if end > end_of_data:
                break
            kind = first >> 4
            if kind == _PUBLISH:
                topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
                if first & 0x06:  # QoS 1 or 2: a packet id follows the topic
                    publishes.append(
                        (buf[topic_end] << 8 | buf[topic_end + 1], bytes(buf[topic_end + 2 : end]))
                    )
                else:
                    self.problems.append("a QoS 0 PUBLISH")
            elif kind == _PUBACK:
                pubacks.append(buf[i] << 8 | buf[i + 1])
            elif (waiter := self.waiting.pop(kind, None)) is not None:
                waiter.set_result(bytes(buf[i:end]))
            else:
                self.problems.append(f"unexpected packet type {kind}")
            pos = end
        del buf[:pos]
        if publishes:
            if self.on_publishes is None:
                self.problems.append(f"{len(publishes)} PUBLISH before the workload was ready")
            else:
                self.on_publishes(publishes)
        if pubacks:
            if self.on_pubacks is None:
                self.problems.append(f"{len(pubacks)} PUBACK nobody waited for")
            else:
                self.on_pubacks(pubacks)


async def _connect(broker: Broker, client_id: str, *, clean_session: bool) -> tuple[_Client, bool]:
    """An MQTT session: the connection and whether the broker kept a session for this client."""
    _, client = await asyncio.get_running_loop().create_connection(_Client, broker.host, broker.port)
    connack = client.expect(_CONNACK)
    client.write(connect_packet(client_id, clean_session=clean_session))
    flags, code = await asyncio.wait_for(connack, HANDSHAKE_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"CONNACK refused {client_id}: return code {code}")
    return client, bool(flags & 1)


async def _subscribe(client: _Client, topic: str) -> None:
    suback = client.expect(_SUBACK)
    client.write(subscribe_packet(1, topic))
    granted = (await asyncio.wait_for(suback, HANDSHAKE_TIMEOUT_S))[2]  # after the packet id
    if granted != 1:
        raise RuntimeError(f"SUBSCRIBE {topic}: granted {granted:#x}, not QoS 1")


async def _disconnect(client: _Client, *, wait: bool = True) -> None:
    """DISCONNECT, then wait for the broker to close: once closed, it has processed the DISCONNECT
    (what the queue workload relies on). Without `wait` (after a failed run), close at once."""
    if client.transport is None or client.transport.is_closing():
        return
    client.write(_DISCONNECT)
    try:
        if wait:
            await asyncio.wait_for(asyncio.shield(client.closed), HANDSHAKE_TIMEOUT_S)
    finally:
        client.transport.close()


async def _persistent_subscriber(broker: Broker, client_id: str, topic: str) -> _Client:
    """A subscriber with a fresh persistent session: any earlier session of this id is wiped first."""
    old, _ = await _connect(broker, client_id, clean_session=True)
    await _disconnect(old)
    client, _ = await _connect(broker, client_id, clean_session=False)
    await _subscribe(client, topic)
    return client


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

    client: _Client
    topic: str
    messages: int
    window: int
    sent: int = 0
    acked: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # perf_counter of each publish, by sequence

    def __post_init__(self) -> None:
        self.topic_field = _string(self.topic)

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


async def _until(done: asyncio.Future[None], *clients: _Client, limit_s: float) -> str | None:
    """Waits for `done`; returns why it did not come (timeout, a lost connection), else None."""
    finished, _ = await asyncio.wait(
        [done, *(c.closed for c in clients)], timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
    )
    if done in finished:
        return None
    return "the broker closed a connection" if finished else f"timed out after {limit_s:g} s"


@dataclass
class _Meter:
    """CPU of the broker and of this process over the timed part."""

    broker: Broker
    server: float | None = None
    generator: float = 0.0

    def start(self) -> None:
        self.server, self.generator = self.broker.cpu(), common.own_cpu_seconds()

    def stop(self) -> None:
        server = self.broker.cpu()
        self.server = server - self.server if server is not None and self.server is not None else None
        self.generator = common.own_cpu_seconds() - self.generator


def _result(
    broker: Broker,
    *,
    received: int,
    seconds: float,
    meter: _Meter,
    failures: list[str],
    parts: list[_Receiver | _Publisher | _Client],
) -> common.Run:
    """The Run: errors count every failure and every bad message or PUBACK; a few are kept in words."""
    errors = len(failures)
    problems = list(failures)
    for part in parts:
        errors += part.errors if isinstance(part, _Receiver | _Publisher) else len(part.problems)
        problems += part.problems
    return common.Run(
        system=broker.system,
        count=received,
        seconds=seconds,
        server_cpu_s=meter.server,
        generator_cpu_s=meter.generator,
        errors=errors,
        extra={"problems": problems[:PROBLEMS_KEPT]},
    )


async def _send(broker: Broker, messages: int, window: int, limit_s: float, bar: Progress) -> common.Run:
    sub_id, pub_id, topic = _ids("send")
    subscriber = await _persistent_subscriber(broker, sub_id, topic)
    publisher_client, _ = await _connect(broker, pub_id, clean_session=True)
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
    meter = _Meter(broker)
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
        await _disconnect(client, wait=failure is None)
    parts: list[_Receiver | _Publisher | _Client] = [receiver, publisher, subscriber, publisher_client]
    run = _result(
        broker, received=receiver.received, seconds=seconds, meter=meter, failures=failures, parts=parts
    )
    # Both lists are by sequence number, from 1: arrival minus publish of the same message.
    run.latency_ms = common.percentiles(
        [arrived - sent for arrived, sent in zip(receiver.arrivals, publisher.sent_at, strict=False)]
    )
    return run


async def _queue(broker: Broker, messages: int, limit_s: float, bar: Progress) -> common.Run:
    sub_id, pub_id, topic = _ids("queue")
    deadline = time.monotonic() + limit_s
    loop = asyncio.get_running_loop()
    subscriber = await _persistent_subscriber(broker, sub_id, topic)
    await _disconnect(subscriber)  # away: what is published now waits in its session

    publisher_client, _ = await _connect(broker, pub_id, clean_session=True)
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
    await _disconnect(publisher_client, wait=failure is None)
    meter = _Meter(broker)
    if failure is not None:
        failures = [f"filling the queue {failure}: {publisher.acked} of {messages} PUBACKs"]
        return _result(
            broker,
            received=0,
            seconds=0.0,
            meter=meter,
            failures=failures,
            parts=[publisher, publisher_client],
        )

    bar.reset(task, description="mosquitto queue: draining", total=messages)
    receiver = _Receiver(messages)
    done: asyncio.Future[None] = loop.create_future()
    _, client = await loop.create_connection(_Client, broker.host, broker.port)

    def on_publishes(batch: list[tuple[int, bytes]]) -> None:
        client.write(receiver.take(batch, time.perf_counter()))
        bar.update(task, completed=receiver.received)
        if receiver.done() and not done.done():
            done.set_result(None)

    client.on_publishes = on_publishes
    connack = client.expect(_CONNACK)
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
    await _disconnect(client, wait=failure is None)
    parts: list[_Receiver | _Publisher | _Client] = [receiver, publisher, client]
    return _result(
        broker, received=receiver.received, seconds=seconds, meter=meter, failures=failures, parts=parts
    )


def send_once(broker: Broker, messages: int, window: int, timeout: float) -> common.Run:
    """One `send` run against `broker`: `messages` QoS-1 messages, at most `window` unacknowledged."""
    if not 0 < window <= MAX_PACKET_ID:
        raise ValueError(f"window must be 1..{MAX_PACKET_ID} (MQTT packet ids), not {window}")
    with common.progress("mosquitto send", messages) as bar:
        # The set-up (connections, subscription) is bounded apart from the timed part.
        return uvloop.run(asyncio.wait_for(_send(broker, messages, window, timeout, bar), timeout + 60))


def queue_once(broker: Broker, messages: int, timeout: float) -> common.Run:
    """One `queue` run against `broker`: `messages` queued for the offline subscriber, then drained.
    `timeout` bounds the filling and the drain together."""
    with common.progress("mosquitto queue", messages) as bar:
        return uvloop.run(asyncio.wait_for(_queue(broker, messages, timeout, bar), timeout + 60))


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
