"""What the flood found about History (docs/reliability.md, "Findings"), now fixed: the store stops
reading a page once its texts pass a frame, and a connection has one History in the store at a time.

What they guard against:
1. `SqliteStore.history` loaded `limit` rows (up to 500) whatever their size before the transport cuts
   the page to max_frame_bytes: a 30-byte request makes the server hold up to 500 x max_text_bytes
   (32 MiB), and a connection may have MAX_IN_FLIGHT (1000) of them unanswered.
2. Reads shared the store's one FIFO queue with everyone's writes and run on the event loop: one
   connection's pipelined History requests (up to MAX_IN_FLIGHT, each ~1 ms for a page of 300 rows)
   delay every other user's sends by as long as they take.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dmds.client.session import SessionClient
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import Connection, Role
from dmds.settings import SessionSettings
from tests.conftest import ServerFactory, ServerProcess

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
PASSWORD = "secret password"
MIB = 1024 * 1024


async def account(server: ServerProcess, alias: str) -> SessionClient:
    client = await SessionClient.connect(HOST, server.session_port)
    await client.register(alias, f"User {alias}", "01/02/2000", PASSWORD)
    await client.login(alias, PASSWORD)
    return client


async def raw_history(server: ServerProcess, token: str, peer: str, requests: int) -> asyncio.StreamWriter:
    """A connection that logs in with `token`, pipelines `requests` History pages, and never reads."""
    reader, writer = await asyncio.open_connection(HOST, server.session_port)
    codec = Connection(Role.CLIENT)
    writer.write(codec.send(f.Hello(version=f.VERSION), 0) + codec.send(f.Login(id=1, token=token), 0))
    while True:  # History before the login is done would be refused
        codec.receive_data(await reader.read(65536), 0)
        events = []
        while (event := codec.next_event()) is not None:
            events.append(event)
        if any(isinstance(e, f.LoggedIn) for e in events):
            break
    writer.write(b"".join(codec.send(f.History(id=2 + n, peer=peer, limit=500), 0) for n in range(requests)))
    return writer


def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_history_request_costs_about_a_frame_whatever_the_texts(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--sync", "normal")
    juan, maria = await account(server, "juan"), await account(server, "maria")
    text = "x" * 60_000  # within max_text_bytes (65536)
    await asyncio.gather(*(juan.send("maria", text) for _ in range(500)))
    await maria.close()
    requests = 20
    base = rss_kib(server)
    writer = await raw_history(server, juan.token, "maria", requests)
    peak = base
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(server))
        await asyncio.sleep(0.02)
    writer.transport.abort()
    await juan.close()
    s = SessionSettings()
    # Each answer is at most one frame; building it may cost a few times that. The connection is
    # cut once max_outgoing_bytes are queued.
    bound = requests * 4 * s.max_frame_bytes + s.max_outgoing_bytes + 32 * MIB
    assert (peak - base) * 1024 <= bound, f"{(peak - base) // 1024} MiB for {requests} History requests"


async def test_pipelined_history_does_not_hold_up_other_users(server_factory: ServerFactory) -> None:
    server = server_factory()
    juan, maria = await account(server, "juan"), await account(server, "maria")
    hostile = [await account(server, f"h{i}") for i in range(2)]
    for i, client in enumerate(hostile):
        await asyncio.gather(*(client.send(f"h{1 - i}", f"page filler {n} " + "x" * 64) for n in range(300)))
    writers = [await raw_history(server, c.token, f"h{1 - i}", 1000) for i, c in enumerate(hostile)]
    worst = 0.0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        began = time.monotonic()
        await juan.send("maria", "are you there?")
        worst = max(worst, time.monotonic() - began)
    for writer in writers:
        writer.transport.abort()
    for client in (juan, maria, *hostile):
        await client.close()
    # Half a second: more than one store batch of another user's reads (256 x ~1 ms), far more than
    # a durable send takes (a few ms).
    assert worst < 0.5, f"a send waited {worst:.2f} s behind another user's History requests"
