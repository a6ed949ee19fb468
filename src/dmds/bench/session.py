"""Session-protocol load: one sender and one recipient, end to end, durable.

The sender pipelines `Send` frames with at most `window` unanswered; the recipient acknowledges what
it receives, once per loop pass; the run ends when the sender holds a `Delivered` receipt for every
message. What it checks: every message arrives exactly once and in order, with its text, and every
receipt matches. The generator speaks the codec directly over asyncio.Protocol, so that its own cost
stays small next to the server's; the server's CPU time is reported to show which side limits.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from dmds.bench import servers
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, Role

PASSWORD = "bench password"  # noqa: S105 - the throwaway accounts of a benchmark
#: Seconds a run may take before it is abandoned.
RUN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class SendResult:
    sync: str
    messages: int
    seconds: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


class _Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.codec = Connection(Role.CLIENT)
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.on_frame: Any = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.codec.receive_data(data, 0)
        while (frame := self.codec.next_event()) is not None and frame is not CLOSED_EVENT:
            if self.on_frame is not None:
                self.on_frame(frame)
            else:
                self.frames.put_nowait(frame)

    def send(self, frame: f.Frame) -> None:
        assert self.transport is not None
        self.transport.write(self.codec.send(frame, 0))

    async def ask(self, frame: f.Frame) -> Any:
        self.send(frame)
        answer = await asyncio.wait_for(self.frames.get(), 30)
        if isinstance(answer, f.Error):
            raise RuntimeError(f"{type(frame).__name__}: {answer.code.name} {answer.message}")
        return answer


async def _peer(port: int, alias: str) -> _Peer:
    _, peer = await asyncio.get_running_loop().create_connection(_Peer, "127.0.0.1", port)
    await peer.ask(f.Hello(version=f.VERSION, client="dmds-bench"))
    await peer.ask(
        f.Register(id=1, alias=alias, full_name="Bench", birth_date="01/01/2000", password=PASSWORD)
    )
    await peer.ask(f.Login(id=2, alias=alias, password=PASSWORD))
    return peer


async def _one_pair(port: int, messages: int, window: int) -> float:
    sender, recipient = await _peer(port, "sender"), await _peer(port, "recipient")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    slots = asyncio.Semaphore(window)
    received: list[int] = []
    delivered: set[int] = set()
    acks: list[int] = []
    problems: list[str] = []

    def flush_acks() -> None:
        ids = acks.copy()
        acks.clear()
        recipient.send(f.Ack(message_ids=ids))

    def on_recipient(frame: Any) -> None:
        if isinstance(frame, f.Message):
            if frame.text != f"message {frame.message_id}":
                problems.append(f"message {frame.message_id} came with text {frame.text!r}")
            received.append(frame.message_id)
            if not acks:
                loop.call_soon(flush_acks)
            acks.append(frame.message_id)

    def on_sender(frame: Any) -> None:
        if isinstance(frame, f.Accepted):
            slots.release()
        elif isinstance(frame, f.Delivered):
            if frame.message_id in delivered:
                problems.append(f"receipt {frame.message_id} twice")
            delivered.add(frame.message_id)
            if len(delivered) == messages and not done.done():
                done.set_result(None)
        elif isinstance(frame, f.Error):
            problems.append(f"error {frame.code.name}: {frame.message}")

    recipient.on_frame, sender.on_frame = on_recipient, on_sender
    start = time.perf_counter()
    for n in range(1, messages + 1):
        await slots.acquire()
        sender.send(f.Send(id=n + 10, to="recipient", key=f"k{n}", text=f"message {n}"))
    await asyncio.wait_for(done, RUN_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if received != list(range(1, messages + 1)):
        problems.append("messages missing, duplicated or out of order")
    if problems:
        raise RuntimeError("; ".join(problems[:5]))
    return elapsed


def bench_send(messages: int, window: int, syncs: list[str]) -> list[SendResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="dmds-bench-") as tmp:
        for sync in syncs:
            server = servers.Dmds.start(
                Path(tmp) / f"session-{sync}", sync, "--max-send-rate", "0", "--argon2-time-cost", "1",
                "--argon2-memory-kib", "1024",
            )  # fmt: skip
            try:
                cpu = servers.cpu_seconds(server.proc.pid)
                seconds = uvloop.run(_one_pair(server.session_port, messages, window))
                cpu = servers.cpu_seconds(server.proc.pid) - cpu
            finally:
                server.stop()
            results.append(SendResult(sync, messages, seconds, cpu))
    return results


def report(results: list[SendResult], window: int) -> str:
    lines = [
        f"session SEND, one pair, window {window}, until every Delivered receipt is back (checked: all "
        "delivered once, in order)",
        f"{'server':28} {'messages':>9} {'seconds':>8} {'msg/s':>8} {'server CPU':>11}",
    ]
    for r in results:
        lines.append(
            f"{'dmds serve --sync ' + r.sync:28} {r.messages:9d} {r.seconds:8.2f} {r.rate:8.0f}"
            f" {r.server_cpu_s / r.seconds:10.0%}"
        )
    return "\n".join(lines)
