"""Several real `dmds serve` nodes on one real PostgreSQL: users of different nodes, on both protocols
and over WebSocket, talk, see each other, and keep receiving when a node dies."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect as ws_connect

from dmds.client.session import Message as SessionMessage
from dmds.client.session import SessionClient
from dmds.protocols.session import frames as f
from tests import wire
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.integration.listener import Listener, exchange, message, receipt, sent
from tests.integration.session_wire import Peer, account
from tests.integration.test_session_ws import WsPeer

LEASE = ("--lease-s", "2")


def nodes(factory: ServerFactory, url: str, count: int, *extra: str) -> list[ServerProcess]:
    return [
        factory(*FAST, *LEASE, "--store", url, "--node-id", f"node{i}", *extra, data_dir=None)
        for i in range(count)
    ]


def register(port: int, *aliases: str) -> None:
    for alias in aliases:
        assert exchange(port, wire.register(f"User {alias}", alias, "01/02/2000")) == b"0\0"


def until(check: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not callable(check) or not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def classic_online(port: int, alias: str) -> Listener:
    """A classic user registered and connected through `port`, with the listener pushes go to."""
    listener = Listener()
    register(port, alias)
    assert exchange(port, wire.connect(alias, listener.port)) == b"0\0"
    return listener


def users(port: int, alias: str) -> list[str]:
    reply = exchange(port, wire.connected_users(alias))
    assert reply.startswith(b"0\0"), reply
    return sorted(x.decode() for x in reply.split(b"\0")[2:-1])


async def test_classic_and_session_users_on_different_nodes_talk(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = nodes(server_factory, pg_url, 2)
    juan = classic_online(a.port, "juan")
    maria = await account(b.session_port, "maria")
    # Presence of every node, in both protocols.
    assert sorted((await maria.request(f.Subscribe)).online) == ["juan", "maria"]
    assert users(a.port, "juan") == ["juan", "maria"]
    # A classic user's requests may reach any node: SEND through B while A pushes to him.
    started = time.monotonic()
    assert exchange(b.port, wire.send("juan", "maria", "hola desde A")) == sent(1)
    pushed = await maria.expect(f.Message)
    assert (pushed.sender, pushed.message_id, pushed.text) == ("juan", 1, "hola desde A")
    maria.write(f.Ack(message_ids=[1]))
    assert await asyncio.to_thread(juan.wait, 1) == [receipt(1)]
    await maria.request(f.Send, to="juan", key="k1", text="hola desde B")
    assert (await asyncio.to_thread(juan.wait, 2))[1] == message("maria", 1, "hola desde B")
    assert time.monotonic() - started < 5
    # DISCONNECT through the node that does not push to him.
    assert exchange(b.port, wire.disconnect("juan")) == b"0\0"
    assert await maria.expect(f.PresenceChanged) == f.PresenceChanged(alias="juan", online=False)
    await asyncio.to_thread(until, lambda: users(a.port, "maria") == ["maria"])
    await maria.request(f.Send, to="juan", key="k2", text="stored")
    await asyncio.sleep(0.5)
    assert len(juan.pushes) == 2  # nobody pushes to a disconnected classic user
    assert exchange(b.port, wire.connect("juan", juan.port)) == b"0\0"
    assert (await asyncio.to_thread(juan.wait, 3))[2] == message("maria", 2, "stored")
    await maria.close()
    juan.close()


async def test_a_session_user_moves_to_another_node_and_history_sees_both(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = nodes(server_factory, pg_url, 2)
    ana = await account(a.session_port, "ana")
    bob = await account(a.session_port, "bob")
    await ana.request(f.Send, to="bob", key="1", text="one")
    await bob.expect(f.Message, message_id=1)
    # Bob logs in on B: his connection on A is replaced, and B now pushes to him.
    bob2 = await Peer.open(b.session_port)
    assert isinstance(await bob2.request(f.Login, alias="bob", password="secret password"), f.LoggedIn)
    await bob.wait_closed()
    await ana.request(f.Send, to="bob", key="2", text="two")
    assert (await bob2.expect(f.Message, message_id=2)).text == "two"
    page = await bob2.request(f.History, peer="ana", before=0.0, limit=10)
    assert [m.text for m in page.entries] == ["two", "one"]
    for peer in (ana, bob2):
        await peer.close()


async def test_browser_on_one_node_and_tcp_on_another(server_factory: ServerFactory, pg_url: str) -> None:
    a, b = nodes(server_factory, pg_url, 2)
    tcp = await account(a.session_port, "tcp")
    async with ws_connect(f"ws://127.0.0.1:{b.web_port}/session") as ws:
        web = WsPeer(ws)
        await web.send(f.Hello(version=f.VERSION, client="browser"))
        assert isinstance(await web.next(), f.Welcome)
        await web.request(
            f.Register, alias="web", full_name="Web", birth_date="01/02/2000", password="secret password"
        )
        assert isinstance(await web.request(f.Login, alias="web", password="secret password"), f.LoggedIn)
        await tcp.request(f.Send, to="web", key="k", text="hola navegador")
        pushed = await web.next()
        assert (pushed.sender, pushed.text) == ("tcp", "hola navegador")
        await web.send(f.Ack(message_ids=[pushed.message_id]))
        assert await tcp.expect(f.Delivered) == f.Delivered(to="web", message_id=1, key="k")
    await tcp.close()


async def test_concurrent_senders_on_three_nodes_get_consecutive_ids_and_keys_hold_across_nodes(
    server_factory: ServerFactory, pg_url: str
) -> None:
    servers = nodes(server_factory, pg_url, 3)
    sink = await account(servers[0].session_port, "sink")
    senders = [await account(s.session_port, f"s{i}") for i, s in enumerate(servers)]
    per_sender = 150

    async def burst(peer: Peer, name: str) -> list[int]:
        ids = [next(peer.ids) for _ in range(per_sender)]
        for n, rid in enumerate(ids):
            peer.write(f.Send(id=rid, to="sink", key=f"{name}-{n}", text=f"{name} {n}"))
        accepted = [await peer.expect(f.Accepted, re=rid) for rid in ids]
        return [a.message_id for a in accepted]

    results = await asyncio.gather(*(burst(p, f"s{i}") for i, p in enumerate(senders)))
    every = sorted(i for ids in results for i in ids)
    assert every == list(range(1, 3 * per_sender + 1))  # no gap, no duplicate
    for ids in results:
        assert ids == sorted(ids)  # one sender's messages keep their order
    # A resend of a key (s0 reconnected through another node) answers the first message and
    # stores nothing.
    moved = await account(servers[1].session_port, "s0", register=False)
    again = await moved.request(f.Send, to="sink", key="s0-7", text="s0 7")
    assert (again.message_id, again.key) == (results[0][7], "s0-7")
    senders[0] = moved
    # The sink, on node 0, receives all of them in id order, across nodes.
    got = [(await sink.expect(f.Message, timeout_s=20)).message_id for _ in range(3 * per_sender)]
    assert got == list(range(1, 3 * per_sender + 1))
    await asyncio.sleep(0.3)
    assert not [m for m in sink.inbox if isinstance(m, f.Message)]
    for peer in (sink, *senders):
        await peer.close()


async def test_a_dead_nodes_classic_user_is_taken_over_and_its_session_users_go_offline(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b = nodes(server_factory, pg_url, 2)
    juan = classic_online(a.port, "juan")
    gone = await account(a.session_port, "gone")
    watcher = await account(b.session_port, "watcher")
    assert sorted((await watcher.request(f.Subscribe)).online) == ["gone", "juan", "watcher"]
    a.kill()
    killed = time.monotonic()
    assert await watcher.expect(f.PresenceChanged, timeout_s=10) == f.PresenceChanged(
        alias="gone", online=False
    )
    offline_after = time.monotonic() - killed
    assert offline_after < 2 * 2 + 1  # within the lease and a heartbeat or two
    # Juan's client knows nothing of nodes: he is still connected, and B now pushes to him.
    assert users(b.port, "juan") == ["juan", "watcher"]
    await watcher.request(f.Send, to="juan", key="k", text="still there?")
    assert (await asyncio.to_thread(juan.wait, 1)) == [message("watcher", 1, "still there?")]
    assert exchange(b.port, wire.connect("juan", juan.port)) == b"2\0"  # one pusher, still
    await watcher.close()
    await gone.close()
    juan.close()


async def test_session_clients_move_to_a_live_node_when_theirs_dies_under_load(
    server_factory: ServerFactory, pg_url: str
) -> None:
    a, b, c = nodes(server_factory, pg_url, 3)
    servers = f"127.0.0.1:{a.session_port},127.0.0.1:{b.session_port},127.0.0.1:{c.session_port}"
    reader = await SessionClient.connect_any(servers, reconnect=True)
    await reader.register("reader", "Reader", "01/02/2000", "secret password")
    await reader.login("reader", "secret password")
    writer = await SessionClient.connect_any(servers, reconnect=True)
    await writer.register("writer", "Writer", "01/02/2000", "secret password")
    await writer.login("writer", "secret password")
    assert (reader.port, writer.port) == (a.session_port, a.session_port)
    got: list[int] = []

    async def read() -> None:
        async for event in reader.events():
            if isinstance(event, SessionMessage):
                got.append(event.message_id)
                if len(got) == 200:
                    return

    reading = asyncio.create_task(read())
    sends = [asyncio.create_task(writer.send("reader", f"m{n}")) for n in range(100)]
    await asyncio.sleep(0.05)
    a.kill()  # both clients' node, mid-load
    sends += [asyncio.create_task(writer.send("reader", f"m{n}")) for n in range(100, 200)]
    ids = [accepted.message_id for accepted in await asyncio.gather(*sends)]
    assert sorted(ids) == list(range(1, 201))  # every send acknowledged once, none twice
    await asyncio.wait_for(reading, 20)
    assert sorted(got) == list(range(1, 201))
    assert writer.port != a.session_port
    assert reader.port != a.session_port
    await writer.close()
    await reader.close()
