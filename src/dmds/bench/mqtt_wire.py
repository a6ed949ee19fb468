"""MQTT 3.1.1 as the workloads speak it: the five packet types they need, and a client protocol
that hands each read over as one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dmds.bench.mosquitto import Broker

#: Seconds to wait for CONNACK, SUBACK, and the broker closing after DISCONNECT.
HANDSHAKE_TIMEOUT_S = 10.0
#: MQTT packet identifiers are 16-bit and never 0.
MAX_PACKET_ID = 65535
#: Keep-alive asked in CONNECT: longer than any run, so that no PINGREQ is needed.
KEEPALIVE_S = 65535

# Packet types (MQTT 3.1.1, section 2.2.1) and fixed-header bytes.
CONNACK, _PUBLISH, _PUBACK, _SUBACK = 2, 3, 4, 9
_DISCONNECT = b"\xe0\x00"
_PUBLISH_QOS1 = 0x32


def varint(n: int) -> bytes:
    """The remaining-length encoding: 7 bits per byte, low first, high bit set on all but the last."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def utf8_string(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, *, clean_session: bool) -> bytes:
    body = utf8_string("MQTT") + bytes([4, 0x02 if clean_session else 0]) + KEEPALIVE_S.to_bytes(2, "big")
    body += utf8_string(client_id)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(packet_id: int, topic: str) -> bytes:
    body = packet_id.to_bytes(2, "big") + utf8_string(topic) + b"\x01"  # requested QoS 1
    return b"\x82" + varint(len(body)) + body


def publish_packet(topic_field: bytes, packet_id: int, payload: bytes) -> bytes:
    """A QoS-1 PUBLISH; `topic_field` is the topic already length-prefixed (`string`)."""
    body_length = len(topic_field) + 2 + len(payload)
    return bytes([_PUBLISH_QOS1]) + varint(body_length) + topic_field + packet_id.to_bytes(2, "big") + payload


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def packet_id(sequence: int) -> int:
    """The packet identifier of the `sequence`-th publish (from 1): 1..65535, then round again."""
    return (sequence - 1) % MAX_PACKET_ID + 1


class Client(asyncio.Protocol):
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

    @property
    def errors(self) -> int:
        return len(self.problems)

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


async def connect(broker: Broker, client_id: str, *, clean_session: bool) -> tuple[Client, bool]:
    """An MQTT session: the connection and whether the broker kept a session for this client."""
    _, client = await asyncio.get_running_loop().create_connection(Client, broker.host, broker.port)
    connack = client.expect(CONNACK)
    client.write(connect_packet(client_id, clean_session=clean_session))
    flags, code = await asyncio.wait_for(connack, HANDSHAKE_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"CONNACK refused {client_id}: return code {code}")
    return client, bool(flags & 1)


async def subscribe(client: Client, topic: str) -> None:
    suback = client.expect(_SUBACK)
    client.write(subscribe_packet(1, topic))
    granted = (await asyncio.wait_for(suback, HANDSHAKE_TIMEOUT_S))[2]  # after the packet id
    if granted != 1:
        raise RuntimeError(f"SUBSCRIBE {topic}: granted {granted:#x}, not QoS 1")


async def disconnect(client: Client, *, wait: bool = True) -> None:
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


async def persistent_subscriber(broker: Broker, client_id: str, topic: str) -> Client:
    """A subscriber with a fresh persistent session: any earlier session of this id is wiped first."""
    old, _ = await connect(broker, client_id, clean_session=True)
    await disconnect(old)
    client, _ = await connect(broker, client_id, clean_session=False)
    await subscribe(client, topic)
    return client
