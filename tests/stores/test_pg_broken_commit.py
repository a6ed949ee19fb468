"""A PostgreSQL connection that breaks during COMMIT, through a real relay on 127.0.0.1: the store
answers what the database did (a message committed is acknowledged once, one rolled back fails),
never "failed" for a message that is stored (a classic client would send it again: stored twice),
nor a result for one that is not (lost, though acknowledged)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dmds.cluster.postgres import LocalPostgres
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
        #: called when the COMMIT to cut comes, before it is passed on or cut
        self.on_commit: Callable[[], None] | None = None
        self.down = False  # refuse every connection, as a database that is away
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            if self.down:
                raise ConnectionRefusedError
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:  # the database is away: so is the relayed connection
            client_w.transport.abort()
            return
        muted = False  # the database's answers no longer reach the client

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.cut is not None and COMMIT in data:
                    mode, self.cut = self.cut, None
                    self.cuts += 1
                    if self.on_commit is not None:
                        self.on_commit()
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


async def relayed_store(url: str, settings: StoreSettings) -> tuple[Relay, PostgresStore]:
    parts = urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    store = await PostgresStore.open(urlunsplit(parts._replace(netloc=netloc)), settings, "node")
    return relay, store


@pytest.fixture
async def relayed(pg_url: str) -> AsyncIterator[tuple[Relay, PostgresStore]]:
    relay, store = await relayed_store(pg_url, StoreSettings())
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


@pytest.mark.parametrize("id_taken", [True, False], ids=["id-taken-again", "id-in-the-future"])
async def test_a_batch_lost_in_a_crash_fails_though_its_transaction_id_commits_again(
    crashable_postgres: LocalPostgres, id_taken: bool
) -> None:
    # The database dies with the batch's transaction open, its WAL still in memory: the restarted
    # database hands the same id to the next transactions (another node's, here), and
    # pg_xact_status says "committed" of one of them. The batch must fail (the classic sender sends
    # again), not be acknowledged. The node can reach the database only once the id is taken, or
    # (id_taken False) while it is still in the future.
    url = crashable_postgres.create_database("lost")
    relay, store = await relayed_store(url, StoreSettings(store_outcome_timeout_s=20.0))
    try:
        for alias in ("ana", "bob"):
            await store.register(User(alias=alias, full_name=f"User {alias}", birth_date="01/02/2000"))
        relay.cut, relay.down = "instead", True
        relay.on_commit = crashable_postgres.kill
        sending = asyncio.ensure_future(send(store, "perdido"))
        while relay.cuts == 0:  # polled: the relay knows nothing of the test
            await asyncio.sleep(0.01)
        await asyncio.to_thread(crashable_postgres.restart)
        if not id_taken:
            # Known at once, well within the outcome timeout: no one can have that id any more.
            relay.down = False
            with pytest.raises(StoreError):
                await asyncio.wait_for(asyncio.shield(sending), 10)
        others = await asyncpg.connect(url)
        try:
            taken = [await others.fetchval("SELECT pg_current_xact_id()::text") for _ in range(20)]
        finally:
            await others.close()
        relay.down = False
        with pytest.raises(StoreError):
            await sending
        assert await store.pending("bob", 0, 10) == []
        again, _ = await send(store, "otra")
        assert again.message_id == 1, taken
    finally:
        await store.close()
        await relay.close()
