"""An idempotent key that another node commits while this node's batch is storing the same key:
the batch is retried and answers the other node's message, with the counters as they were."""

from __future__ import annotations

import asyncio

import asyncpg

from dmds.core.model import User
from dmds.settings import StoreSettings
from dmds.stores.postgresql import PostgresStore


async def test_a_key_committed_meanwhile_by_another_node_answers_its_message(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, StoreSettings(), "here")
    other = await asyncpg.connect(pg_url)
    try:
        for alias in ("ana", "bob", "carl"):
            await store.register(User(alias, alias.title(), "01/02/2000"))
        # "Another node" stores ana's message with key k for carl and has not committed yet: this
        # node's key check cannot see it, and its insert waits for that transaction.
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "INSERT INTO messages (recipient_id, recipient_alias, message_id, sender_id, sender_alias,"
            " client_key, pair, text, size, sent_at, seq)"
            " SELECT c.id, 'carl', 1, a.id, 'ana', 'k', 'ana carl', 'first', 5, 1.0, nextval('outbox_seq')"
            " FROM users a, users c WHERE a.alias = 'ana' AND c.alias = 'carl'"
        )
        sending = asyncio.ensure_future(
            store.add_message("ana", "bob", "second", now=2.0, key="k", max_stored=9, max_stored_bytes=999)
        )
        await asyncio.sleep(0.5)
        assert not sending.done()  # waiting on the other transaction's key
        await tx.commit()
        item, new = await asyncio.wait_for(sending, 10)
        assert (new, item.owner, item.message_id) == (False, "carl", 1)
        # Nothing of it stayed for bob: no message, no id taken, no count.
        assert await store.pending("bob", 0, 10) == []
        item, new = await store.add_message(
            "ana", "bob", "third", now=3.0, max_stored=1, max_stored_bytes=999
        )
        assert (new, item.message_id) == (True, 1)
    finally:
        await other.close()
        await store.close()
