"""Classic pushes: one TCP connection per item, dialled back to the client's listener.

classic.md: the server opens a new connection to the address the CONNECT came from, at listen_port,
writes one item and closes. Connecting and writing are each bounded by a timeout, so a listener that
is gone or never reads costs its own user a timeout, never anyone else a delay.
"""

from __future__ import annotations

import asyncio

from dmds.core.model import ItemKind, OutboxItem
from dmds.errors import DeliveryFailed, DmdsError
from dmds.protocols.classic import MessagePush, ReceiptPush, encode_push
from dmds.settings import DeliverySettings


def pushes_for(item: OutboxItem) -> list[MessagePush | ReceiptPush]:
    """classic.md's pushes for an item: a message, or a receipt per message a range covers."""
    if item.kind is ItemKind.MESSAGE:
        return [MessagePush(item.peer, item.message_id, item.text)]
    return [ReceiptPush(message_id) for message_id, _ in item.receipts]


class _PushProtocol(asyncio.Protocol):
    """Writes nothing itself; only reports when the peer has closed (or reset) the connection."""

    def __init__(self) -> None:
        #: set when the connection is gone: to None once our bytes were flushed and it closed
        #: cleanly, to the error if it broke first
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        pass  # a listener has nothing to say; ignore whatever it sends


class ClassicEndpoint:
    """A classic client's push listener at (host, port)."""

    #: classic.md: a push written is a message delivered; the client confirms nothing.
    confirms = False
    #: One connection per push: pushed one by one, each awaited.
    batches = False

    def __init__(self, host: str, port: int, settings: DeliverySettings) -> None:
        self.host = host
        self.port = port
        self._settings = settings

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def replaced(self) -> None:
        pass  # classic users cannot be taken over: CONNECT answers 2 instead

    def typing(self, sender: str) -> None:
        pass  # the classic protocol has no typing notices

    def kicked(self, reason: DmdsError) -> None:
        pass  # classic.md has no way to tell: the client learns at its next request (not connected)

    def deliver_batch(self, items: list[OutboxItem]) -> None:
        raise NotImplementedError("classic pushes are awaited one by one")

    async def deliver(self, item: OutboxItem) -> None:
        if item.kind is ItemKind.READ:
            return  # the classic protocol has no read receipts
        # One connection per push (classic.md). If one of a range's fails, the courier ends and the
        # whole range is pushed again at the next CONNECT: a repeat, never a loss.
        for push in pushes_for(item):
            await self._push(encode_push(push))

    async def _push(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                transport, protocol = await loop.create_connection(_PushProtocol, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"cannot connect: {exc or 'timeout'}") from None
        try:
            async with asyncio.timeout(self._settings.push_timeout_s):
                transport.write(data)
                # Closing flushes the write buffer first; connection_lost comes once it is on the wire.
                transport.close()
                error = await protocol.closed
        except TimeoutError:
            transport.abort()
            raise DeliveryFailed("timed out writing the push") from None
        except asyncio.CancelledError:
            transport.abort()  # the user disconnected meanwhile: do not leave the socket behind
            raise
        if error is not None:
            raise DeliveryFailed(f"connection broke before the push was written: {error}")
