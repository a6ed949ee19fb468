"""PostgreSQL crashes (SIGKILL) and comes back under two live nodes: meanwhile every request gets
the protocol's store-failure answer (never a false acknowledgement); afterwards the nodes work again
by themselves, across nodes, and nothing acknowledged before is lost."""

from __future__ import annotations

import asyncio
import time

from dmds.cluster.postgres import LocalPostgres
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from tests import wire
from tests.conftest import ServerFactory
from tests.integration.listener import exchange, message, sent
from tests.integration.session_wire import Peer, account
from tests.integration.test_cluster import classic_online, nodes


async def _send_until_accepted(peer: Peer, key: str, text: str, timeout_s: float = 20) -> f.Accepted:
    """Resend with one key until the store is back: what the client library does."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await peer.request(f.Send, to="bob", key=key, text=text)
        if isinstance(answer, f.Accepted):
            return answer
        assert isinstance(answer, f.Error), answer
        assert answer.code == ErrorCode.INTERNAL, answer
        assert time.monotonic() < deadline, "the nodes did not recover"
        await asyncio.sleep(0.2)


async def test_the_database_restarting_under_two_nodes(
    server_factory: ServerFactory, crashable_postgres: LocalPostgres
) -> None:
    url = crashable_postgres.create_database("dmds")
    a, b = nodes(server_factory, url, 2)
    ana = await account(a.session_port, "ana")
    bob = await account(b.session_port, "bob")
    juan = classic_online(a.port, "juan")
    assert isinstance(await ana.request(f.Send, to="bob", key="k1", text="before"), f.Accepted)
    assert (await bob.expect(f.Message, message_id=1)).text == "before"
    bob.write(f.Ack(message_ids=[1]))

    crashable_postgres.kill()
    during = await ana.request(f.Send, to="bob", key="k2", text="during")
    assert isinstance(during, f.Error), during  # not acknowledged: nothing is committed
    assert during.code == ErrorCode.INTERNAL
    assert exchange(b.port, wire.send("juan", "bob", "classic during")) == b"2\0" + bytes(4)
    assert exchange(a.port, wire.register("Eva", "eva", "01/02/2000")) == b"2\0"
    await asyncio.sleep(0.5)  # a short outage: the nodes keep their leases

    crashable_postgres.restart()
    # The resend of the refused key is the first message the store takes: no gap, no duplicate.
    accepted = await _send_until_accepted(ana, "k2", "during")
    assert accepted.message_id == 2
    assert (await bob.expect(f.Message, message_id=2)).text == "during"  # woken across nodes
    assert exchange(b.port, wire.send("juan", "bob", "classic after")) == sent(3)
    assert (await bob.expect(f.Message, message_id=3)).text == "classic after"
    await bob.request(f.Send, to="juan", key="k3", text="to classic")  # A pushes to juan
    assert await asyncio.to_thread(juan.wait, 1) == [message("bob", 1, "to classic")]
    assert exchange(a.port, wire.register("Eva", "eva", "01/02/2000")) == b"0\0"
    page = await bob.request(f.History, peer="ana", before=0.0, limit=10)
    assert [m.text for m in page.entries] == ["during", "before"]
    for peer in (ana, bob):
        await peer.close()
    juan.close()
