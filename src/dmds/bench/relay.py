"""A minimal durable session relay: the floor under dmds's durable message path on this machine.

What a store-and-forward server cannot do without, and nothing else: the session codec, one SQLite
table (WAL, `synchronous=FULL`), group commit on a writer thread with `accepted` only after the
fsync, a push to the recipient if connected, the stored messages pushed at login, and `ack`
settling a range (one DELETE up to the highest id) with a `delivered` push to an online sender.
No accounts (any login is accepted, the token is the alias), no validation, no limits, no receipts
stored, no presence. `dmds bench send|queue --relay` runs it beside dmds, as the REGISTER bench
runs its trivial server (`baseline.py`); it speaks just enough of session.md for the generator.

    python -m dmds.bench.relay DATA_DIR     prints "relay listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, RemoteProtocolError, Role

#: Rows per transaction at most (as dmds's `max_batch`).
MAX_BATCH = 512
INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?)"

# A job for the writer thread: a statement, its parameters, and what to call on the loop with its
# rows once the batch has committed.
Job = tuple[str, tuple[Any, ...], Callable[[Any], None]]


class Writer:
    """One SQLite connection on its own thread; the jobs waiting when it is free share a commit."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS messages (recipient TEXT NOT NULL, id INTEGER NOT NULL,"
            " sender TEXT NOT NULL, text TEXT NOT NULL, sent_at REAL NOT NULL, PRIMARY KEY (recipient, id))"
            " WITHOUT ROWID"
        )
        self.last_ids: dict[str, int] = dict(
            self._db.execute("SELECT recipient, max(id) FROM messages GROUP BY recipient").fetchall()
        )
        self._loop = loop
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="relay-writer", daemon=True).start()

    def submit(self, sql: str, params: tuple[Any, ...], done: Callable[[Any], None]) -> None:
        self._jobs.put((sql, params, done))

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < MAX_BATCH and not self._jobs.empty():
                batch.append(self._jobs.get())
            self._db.execute("BEGIN")
            results: list[tuple[Callable[[Any], None], Any]] = []
            inserts: list[tuple[Any, ...]] = []
            for sql, params, done in batch:
                if sql is INSERT:
                    inserts.append(params)  # one executemany for a run of them, as dmds does
                    results.append((done, None))
                    continue
                if inserts:
                    self._db.executemany(INSERT, inserts)
                    inserts = []
                results.append((done, self._db.execute(sql, params).fetchall()))
            if inserts:
                self._db.executemany(INSERT, inserts)
            self._db.execute("COMMIT")  # the fsync: only now are the senders answered
            self._loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[Callable[[Any], None], Any]]) -> None:
    for done, rows in results:
        done(rows)


class Relay:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.online: dict[str, Peer] = {}


class Peer(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.codec = Connection(Role.SERVER)
        self.transport: asyncio.Transport | None = None
        self.alias: str | None = None
        self.draining = False
        #: the highest id pushed on this connection, and the (id, sender) pushed and not yet acked
        self.pushed_to = 0
        self.unacked: deque[tuple[int, str]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.alias is not None and self.relay.online.get(self.alias) is self:
            del self.relay.online[self.alias]

    def write(self, *frames: f.Frame) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.codec.send(frame, 0) for frame in frames))

    def data_received(self, data: bytes) -> None:
        self.codec.receive_data(data, 0)
        try:
            while (frame := self.codec.next_event()) is not None:
                if frame is CLOSED_EVENT:
                    break
                self.handle(frame)
        except RemoteProtocolError:
            if self.transport is not None:
                self.transport.close()

    def handle(self, frame: Any) -> None:
        if isinstance(frame, f.Send):
            self.send(frame)
        elif isinstance(frame, f.Ack):
            self.ack(frame.message_ids)
        elif isinstance(frame, f.Hello):
            self.write(
                f.Welcome(
                    version=self.codec.version, server="dmds-bench-relay", heartbeat_s=30.0,
                    idle_timeout_s=90.0,
                    max_frame_bytes=1 << 20, max_text_bytes=1 << 16, max_attachment_bytes=0,
                )
            )  # fmt: skip
        elif isinstance(frame, f.Register):
            self.write(f.Ok(re=frame.id))
        elif isinstance(frame, f.Login):
            self.login(frame)
        elif isinstance(frame, f.Ping):
            self.write(f.Pong(n=frame.n))
        elif hasattr(frame, "id"):
            self.write(f.Error(code=ErrorCode.INVALID_FIELD, message="not in the relay", re=frame.id))

    def login(self, frame: f.Login) -> None:
        alias = frame.token or frame.alias
        self.alias = alias
        self.relay.online[alias] = self
        self.write(f.LoggedIn(re=frame.id, alias=alias, token=alias, expires_at=0.0))
        self.draining = True
        sql = "SELECT id, sender, text, sent_at FROM messages WHERE recipient = ? ORDER BY id"
        self.relay.writer.submit(sql, (alias,), self._drained)

    def _drained(self, rows: list[tuple[int, str, str, float]]) -> None:
        self.draining = False
        self.push([row for row in rows if row[0] > self.pushed_to])

    def push(self, rows: list[tuple[int, str, str, float]]) -> None:
        if not rows:
            return
        self.write(*(f.Message(sender=s, message_id=i, text=t, sent_at=at) for i, s, t, at in rows))
        self.unacked.extend((i, s) for i, s, _, _ in rows)
        self.pushed_to = rows[-1][0]

    def send(self, frame: f.Send) -> None:
        sender, to = self.alias, frame.to
        if sender is None:
            self.write(f.Error(code=ErrorCode.NOT_LOGGED_IN, message="log in first", re=frame.id))
            return
        ids = self.relay.writer.last_ids
        message_id = ids[to] = ids.get(to, 0) + 1
        now = time.time()

        def stored(_: object) -> None:
            self.write(f.Accepted(re=frame.id, to=to, key=frame.key, message_id=message_id))
            peer = self.relay.online.get(to)
            if peer is not None and not peer.draining and message_id > peer.pushed_to:
                peer.push([(message_id, sender, frame.text, now)])

        self.relay.writer.submit(INSERT, (to, message_id, sender, frame.text, now), stored)

    def ack(self, message_ids: list[int]) -> None:
        alias = self.alias
        if alias is None or not message_ids:
            return
        upto = max(message_ids)
        settled = []
        while self.unacked and self.unacked[0][0] <= upto:
            settled.append(self.unacked.popleft())

        def deleted(_: object) -> None:
            for message_id, sender in settled:
                peer = self.relay.online.get(sender)
                if peer is not None:
                    peer.write(f.Delivered(to=alias, message_id=message_id))

        sql = "DELETE FROM messages WHERE recipient = ? AND id <= ?"
        self.relay.writer.submit(sql, (alias, upto), deleted)


async def _main(data_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(Writer(data_dir / "relay.db", loop))
    server = await loop.create_server(lambda: Peer(relay), "127.0.0.1", 0, backlog=1024)
    print(f"relay listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    uvloop.run(_main(Path(sys.argv[1])))
