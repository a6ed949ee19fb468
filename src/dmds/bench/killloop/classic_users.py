"""The classic side of the load: a sender one SEND at a time, recipients CONNECTed again after restarts."""

from __future__ import annotations

import asyncio
import contextlib

from dmds.bench.killloop.ledger import Ledger, RecipientLog, SenderLog, text_of
from dmds.bench.killloop.server import BIRTH, CLASSIC_TIMEOUT_S, HOST, RETRY_S, ChaosServer
from dmds.client import classic as cc
from dmds.protocols.classic import Connect, MessagePush, Push, ReceiptPush, Register, Send


class ClassicUser:
    """A classic alias with its push listener; `connect()` CONNECTs it (again after a restart)."""

    def __init__(self, server: ChaosServer, alias: str) -> None:
        self.server, self.alias = server, alias
        self.listener: cc.PushListener | None = None

    def on_push(self, push: Push) -> None:
        pass

    async def register(self) -> None:
        reply = await cc.request(HOST, self.server.port, Register(f"Chaos {self.alias}", self.alias, BIRTH))
        if reply.code != 0:
            raise RuntimeError(f"REGISTER {self.alias}: {cc.describe('REGISTER', reply.code)}")

    async def connect(self) -> bool:
        """CONNECT; True once connected (code 0), or already (2)."""
        if self.listener is None:
            self.listener = await cc.PushListener.start(HOST, 0, on_push=self.on_push)
        try:
            reply = await cc.request(
                HOST, self.server.port, Connect(self.alias, self.listener.port), timeout_s=CLASSIC_TIMEOUT_S
            )
        except cc.ClassicClientError:
            return False
        return reply.code in (0, 2)

    async def keep_connected(self, stop: asyncio.Event, period_s: float = 0.25) -> None:
        """CONNECT again and again: after a restart everyone is disconnected."""
        while not stop.is_set():
            await self.connect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()


class ClassicSender(ClassicUser):
    """One SEND at a time, as the original client; receipts arrive on its listener."""

    def __init__(self, server: ChaosServer, ledger: Ledger, log: SenderLog) -> None:
        super().__init__(server, log.alias)
        self.ledger, self.log = ledger, log

    def on_push(self, push: Push) -> None:
        if isinstance(push, ReceiptPush):
            self.log.receipts[push.message_id] += 1

    async def run(self, stop: asyncio.Event, limit: int, pace_s: float = 0.0) -> None:
        """Send texts 1, 2, ... until `stop` (or `limit`); `pace_s`: a pause after each."""
        connected = False
        n = 1
        while not stop.is_set() and n <= limit:
            if not connected:
                connected = await self.connect()
                if not connected:
                    await asyncio.sleep(RETRY_S)
                continue
            self.log.issued = max(self.log.issued, n)
            try:
                reply = await cc.request(
                    HOST, self.server.port, Send(self.alias, self.log.to, text_of(self.alias, n)),
                    timeout_s=CLASSIC_TIMEOUT_S,
                )  # fmt: skip
            except cc.ClassicClientError as exc:
                connected = False
                if not isinstance(exc.__cause__, ConnectionRefusedError):
                    # The request may have reached the server: in doubt, never sent again.
                    self.log.in_doubt.add(n)
                    n += 1
                await asyncio.sleep(RETRY_S)
                continue
            if reply.code == 0:
                self.log.acked[n] = reply.message_id
                self.ledger.acked()
                n += 1
                if pace_s:
                    await asyncio.sleep(pace_s)
            else:  # 2: not connected (a restart), stored nothing: CONNECT and send the same text
                if reply.code != 2:
                    self.log.errors[f"SEND code {reply.code}"] += 1
                connected = False


class ClassicRecipient(ClassicUser):
    def __init__(self, server: ChaosServer, log: RecipientLog) -> None:
        super().__init__(server, log.alias)
        self.log = log

    def on_push(self, push: Push) -> None:
        if isinstance(push, MessagePush):
            self.log.arrivals.append((push.message_id, push.sender, push.text))
