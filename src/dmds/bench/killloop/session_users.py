"""The session side of the load: reconnecting clients that send, receive, or log in and out."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from dmds.bench.killloop.ledger import Ledger, RecipientLog, SenderLog, text_of
from dmds.bench.killloop.server import BIRTH, HOST, PASSWORD, RETRY_S, ChaosServer
from dmds.client.session import (
    ConnectionLost,
    Delivered,
    Disconnected,
    Event,
    Message,
    Reconnected,
    SessionClient,
    SessionClientError,
    SessionError,
)
from dmds.protocols.session.codes import ErrorCode


class SessionUser:
    """A session account with a reconnecting client that is replaced if it ever gives up."""

    def __init__(self, server: ChaosServer, ledger: Ledger, alias: str) -> None:
        self.server, self.ledger, self.alias = server, ledger, alias
        #: the other nodes of a cluster: the client goes to them when its own is down
        self.others: list[ChaosServer] = []
        self.client: SessionClient | None = None
        self.token = ""
        self._replacing: asyncio.Future[None] | None = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, Reconnected):
            self.ledger.reconnections += 1

    async def register(self) -> None:
        client = await SessionClient.connect(HOST, self.server.session_port)
        try:
            await client.register(self.alias, f"Chaos {self.alias}", BIRTH, PASSWORD)
        finally:
            await client.close()

    async def open(self, deadline: float, *, reconnect: bool = True) -> SessionClient:
        """A logged-in client, trying until `deadline` while the server is away."""
        while True:
            try:
                client = await SessionClient.connect(
                    HOST,
                    self.server.session_port,
                    reconnect=reconnect,
                    on_event=self.on_event,
                    alternates=[(HOST, other.session_port) for other in self.others],
                )
                try:
                    if self.token:
                        await client.resume(self.token)
                    else:
                        self.token = await client.login(self.alias, PASSWORD)
                except BaseException:
                    await client.close()
                    raise
            except (OSError, SessionClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(RETRY_S)
                continue
            self.client = client
            return client

    async def replace(self, lost: SessionClient, deadline: float) -> SessionClient:
        """The client `lost` gave up: one new client, whoever asks first; the others wait for it.
        Waiters resume in the order they asked, so resends keep their order."""
        if self.client is not lost and self.client is not None and not self.client.closed:
            return self.client
        if self._replacing is None:
            self._replacing = asyncio.get_running_loop().create_future()
            try:
                await lost.close()
                self.ledger.replaced_clients += 1
                await self.open(deadline)
            finally:
                self._replacing.set_result(None)
                self._replacing = None
        else:
            await asyncio.shield(self._replacing)
        assert self.client is not None
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class SessionSender(SessionUser):
    """Pipelines sends (at most `window` unanswered), each with its own key, until stopped."""

    def __init__(self, server: ChaosServer, ledger: Ledger, log: SenderLog, window: int) -> None:
        super().__init__(server, ledger, log.alias)
        self.log, self.window = log, window
        self.deadline = float("inf")

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if isinstance(event, Delivered) and event.to == self.log.to:
            self.log.receipts[event.message_id] += 1
            self.log.receipt_keys[event.message_id] = event.key

    async def run(self, stop: asyncio.Event, limit: int, deadline: float, pace_s: float = 0.0) -> None:
        """Send texts 1, 2, ... until `stop` (or `limit`); `pace_s`: a pause after each."""
        self.deadline = deadline
        slots = asyncio.Semaphore(self.window)
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set() and self.log.issued < limit:
            await slots.acquire()
            if stop.is_set():
                break
            self.log.issued += 1
            task = asyncio.create_task(self._send(self.log.issued))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda _: slots.release())
            await asyncio.sleep(pace_s)  # lets the task write its send: the sends stay in order
        if tasks:
            await asyncio.gather(*tasks)

    async def _send(self, n: int) -> None:
        text, key = text_of(self.alias, n), f"k{n}"
        began = time.monotonic()
        while True:
            client = self.client
            assert client is not None
            try:
                accepted = await client.send(self.log.to, text, key=key)
            except SessionError as exc:  # safe to resend with the key
                if exc.code is ErrorCode.INTERNAL and self.ledger.database_killed:
                    self.ledger.store_failures += 1  # the database is down: what must be answered
                    self.log.refused.add(n)
                else:  # not expected with KILL_SERVER_ARGS
                    self.log.errors[exc.code.name] += 1
                await asyncio.sleep(0.1)
                continue
            except ConnectionLost:
                if time.monotonic() > self.deadline:
                    raise
                await self.replace(client, self.deadline)
                continue
            self.log.acked[n] = accepted.message_id
            self.ledger.acked(time.monotonic() - began)
            return


class SessionRecipient(SessionUser):
    def __init__(self, server: ChaosServer, ledger: Ledger, log: RecipientLog, rng: random.Random) -> None:
        super().__init__(server, ledger, log.alias)
        self.log, self.rng = log, rng
        self._background: set[asyncio.Task[SessionClient]] = set()

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        if isinstance(event, Message):
            self.log.arrivals.append((event.message_id, event.sender, event.text))
        elif isinstance(event, Disconnected) and not event.reconnecting and self.log.mode != "flip":
            lost = self.client
            if lost is not None:
                # Gave up: a new client; the server pushes again what was not acknowledged.
                task = asyncio.get_running_loop().create_task(self.replace(lost, time.monotonic() + 60))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def run(self, stop: asyncio.Event) -> None:
        if self.log.mode == "online":
            await self.open(time.monotonic() + 60)
        elif self.log.mode == "flip":
            # Logs in and out at random: some messages wait, some are pushed at once.
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(0.2, 1.2))
                if stop.is_set():
                    break
                with contextlib.suppress(OSError, SessionClientError):
                    client = await self.open(time.monotonic(), reconnect=False)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.rng.uniform(0.2, 1.2))
                    if not stop.is_set():
                        await client.close()

    async def drain(self, deadline: float) -> None:
        """Online from now on, with a reconnecting client."""
        if self.client is None or self.client.closed or not self.client.reconnect:
            if self.client is not None:
                await self.client.close()
            await self.open(deadline)
