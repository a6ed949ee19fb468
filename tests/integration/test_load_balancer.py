"""docs/deploy/haproxy.cfg, as it is, in front of real nodes on one real PostgreSQL: clients of both
protocols and of WebSocket know one address, and a node dying behind it loses nobody."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from dmds.client.session import Message, Reconnected, SessionClient
from dmds.protocols.session import frames as f
from tests import wire
from tests.conftest import CHEAP_ARGON2, FAST, ServerFactory, ServerProcess
from tests.integration.listener import Listener, exchange, message
from tests.integration.test_session_ws import WsPeer

CONFIG = Path(__file__).parents[2] / "docs" / "deploy" / "haproxy.cfg"
#: Each node on a loopback address of its own, with the same ports, as on machines of their own.
NODES = ("127.0.0.11", "127.0.0.12")
#: The classic client on yet another address: a push dialled to the balancer's would not reach it.
CLIENT = "127.0.0.2"


def free_ports(count: int, hosts: tuple[str, ...]) -> list[int]:
    """Ports free on every one of `hosts`."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        if port not in found:
            found.append(port)
    return found


@dataclass
class Balanced:
    ports: dict[str, int]
    nodes: list[ServerProcess]


@pytest.fixture
def balanced(server_factory: ServerFactory, pg_url: str, tmp_path: Path) -> Iterator[Balanced]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "haproxy is missing: make system-deps installs it"
    classic, session, web, lb_classic, lb_session, lb_web = free_ports(6, (*NODES, "127.0.0.1"))
    nodes = []
    for i, host in enumerate(NODES):
        flags = [*FAST, *CHEAP_ARGON2, "--store", pg_url, "--node-id", f"node{i}", "--lease-s", "2"]
        flags += ["--host", host, "--port", str(classic), "--proxy-protocol", "true"]
        flags += ["--session-host", host, "--session-port", str(session)]
        nodes.append(server_factory(*flags, "--web-host", host, "--web-port", str(web)))
    env = {
        **os.environ,
        "DMDS_LB_HOST": "127.0.0.1",
        "DMDS_LB_CLASSIC_PORT": str(lb_classic),
        "DMDS_LB_SESSION_PORT": str(lb_session),
        "DMDS_LB_WEB_PORT": str(lb_web),
        "DMDS_NODE1": NODES[0],
        "DMDS_NODE2": NODES[1],
        "DMDS_NODE3": "127.0.0.13",  # a node that is down: the balancer marks it so
        "DMDS_NODE_CLASSIC_PORT": str(classic),
        "DMDS_NODE_SESSION_PORT": str(session),
        "DMDS_NODE_WEB_PORT": str(web),
    }
    check = subprocess.run(
        [haproxy, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log = (tmp_path / "haproxy.log").open("wb")
    proc = subprocess.Popen([haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", lb_session), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.05)
    yield Balanced({"classic": lb_classic, "session": lb_session, "web": lb_web}, nodes)
    proc.terminate()
    proc.wait(10)
    log.close()


async def test_both_protocols_and_websocket_through_the_balancer(balanced: Balanced) -> None:
    ports = balanced.ports
    port = ports["classic"]
    juan = Listener(host=CLIENT)
    # Every request is a connection of its own, each may reach another node: none needs stickiness.
    for request in (wire.register("Juan", "juan", "01/02/2000"), wire.connect("juan", juan.port)):
        assert exchange(port, request, source=CLIENT) == b"0\0"
    maria = await SessionClient.connect("127.0.0.1", ports["session"], reconnect=True)
    await maria.register("maria", "María", "01/02/2000", "secret password")
    await maria.login("maria", "secret password")
    await maria.send("juan", "hola juan")
    # The push reached the client's own address, which only the PROXY line told the node.
    assert await asyncio.to_thread(juan.wait, 1) == [message("maria", 1, "hola juan")]
    reply = exchange(port, wire.connected_users("juan"), source=CLIENT)
    assert reply == b"0\x002\0juan\0maria\0" or reply == b"0\x002\0maria\0juan\0"
    async with ws_connect(f"ws://127.0.0.1:{ports['web']}/session") as ws:
        web = WsPeer(ws)
        await web.send(f.Hello(version=f.VERSION, client="browser"))
        assert isinstance(await web.next(), f.Welcome)
        assert isinstance(await web.request(f.Login, alias="maria", password="secret password"), f.LoggedIn)
    await maria.close()
    juan.close()


async def test_a_session_client_that_knows_only_the_balancer_survives_its_node(balanced: Balanced) -> None:
    moved: list[object] = []
    clients = []
    for alias in ("reader", "writer"):
        client = await SessionClient.connect(
            "127.0.0.1", balanced.ports["session"], reconnect=True, on_event=moved.append
        )
        await client.register(alias, alias.title(), "01/02/2000", "secret password")
        await client.login(alias, "secret password")
        clients.append(client)
    reader, writer = clients
    first = await writer.send("reader", "before")
    # leastconn put the two clients on the two nodes: one of them loses its node.
    balanced.nodes[0].kill()
    second = await writer.send("reader", "after")
    async with asyncio.timeout(20):
        while second.message_id not in (got := [e.message_id for e in moved if isinstance(e, Message)]):
            await asyncio.sleep(0.05)
    assert got == [first.message_id, second.message_id]
    assert any(isinstance(event, Reconnected) for event in moved)
    await writer.close()
    await reader.close()
