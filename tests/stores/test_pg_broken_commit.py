"""A PostgreSQL connection that breaks during COMMIT, through a real relay on 127.0.0.1: the store
answers what the database did (a message committed is acknowledged once, one rolled back fails),
never "failed" for a message that is stored (a classic client would send it again: stored twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from dmds.core.model import OutboxItem, User
from dmds.errors import StoreError
from dmds.settings import StoreSettings
from dmds.stores.postgresql import PostgresStore

#: asyncpg's COMMIT: a simple-protocol Query message
COMMIT = b"Q\x00\x00\x00\x0cCOMMIT;\x00"


class Relay:
    """Forwards TCP to PostgreSQL; armed, it cuts the connection that sends the next COMMIT, either
    after passing it on (it commits, the answer is lost) or instead of it (it is rolled back)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut: str | None = None  # "after" or "instead"
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        muted = False  # the database's answers no longer reach the client

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.cut is not None and COMMIT in data:
                    mode, self.cut = self.cut, None
                    self.cuts += 1
                    if mode == "after":
                        nonlocal muted
                        muted = True
                        server_w.write(data)
                        await server_w.drain()
                        await asyncio.sleep(0.2)  # the database commits; its answer goes nowhere
                    break
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if muted:
                    continue
                client_w.write(data)
                await client_w.drain()

        # Either side closing closes both (asyncpg's close waits for the server's).
        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, server_w):
            writer.transport.abort()


async def send(store: PostgresStore, text: str) -> tuple[OutboxItem, bool]:
    return await store.add_message("ana", "bob", text, now=1.0e9, max_stored=9, max_stored_bytes=999)


@pytest.fixture
async def relayed(pg_url: str) -> AsyncIterator[tuple[Relay, PostgresStore]]:
    parts = urlsplit(pg_url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    store = await PostgresStore.open(urlunsplit(parts._replace(netloc=netloc)), StoreSettings(), "node")
    yield relay, store
    await store.close()
    await relay.close()


async def test_a_commit_whose_answer_was_lost_is_acknowledged_once(
    relayed: tuple[Relay, PostgresStore],
) -> None:
    relay, store = relayed
    for alias in ("ana", "bob"):
        await store.register(User(alias=alias, full_name=f"User {alias}", birth_date="01/02/2000"))
    relay.cut = "after"
    item, new = await send(store, "hola")
    assert (relay.cuts, new, item.message_id) == (1, True, 1)
    relay.cut = "instead"
    with pytest.raises(StoreError):
        await send(store, "adiós")
    assert relay.cuts == 2
    # Stored once, the one that committed; the next message gets the next id.
    assert [(i.text, i.message_id) for i in await store.pending("bob", 0, 10)] == [("hola", 1)]
    again, _ = await send(store, "otra")
    assert again.message_id == 2
