"""Version 2 of the session protocol beside version 1, against the real `dmds serve`: a version 1
client is held to version 1 (every message a frame of its own, every receipt about one message),
while a version 2 client gets pages of messages and, if it asked, receipt ranges."""

from __future__ import annotations

import asyncio

import pytest

from dmds.protocols.session import frames as f
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.session_wire import Peer, account


async def _offline_then_drained(server: ServerProcess, juan: Peer, version: int, count: int) -> Peer:
    await (await account(server.session_port, "maria", version=version)).close()
    for n in range(1, count + 1):
        await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}")
    maria = await account(server.session_port, "maria", register=False, version=version)
    got = [await maria.expect(f.Message, message_id=n) for n in range(1, count + 1)]
    assert [m.text for m in got] == [f"m{n}" for n in range(1, count + 1)]
    maria.write(f.Ack(message_ids=list(range(1, count + 1))))
    return maria


@pytest.mark.parametrize("ranges", [False, True])
async def test_a_version_1_client_is_held_to_version_1(server: ServerProcess, ranges: bool) -> None:
    features = (f.RECEIPT_RANGES,) if ranges else ()  # asking for ranges changes nothing in version 1
    juan = await account(server.session_port, "juan", version=1, features=features)
    assert juan.codec.version == 1
    maria = await _offline_then_drained(server, juan, 1, 20)
    assert maria.pages == 0  # twenty Message frames, no Messages
    receipts = [await juan.expect(f.Delivered, message_id=n) for n in range(1, 21)]
    assert [(r.message_id, r.key, r.first) for r in receipts] == [(n, f"k{n}", 0) for n in range(1, 21)]


async def test_a_version_2_client_gets_pages_and_asked_for_ranges(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan", features=(f.RECEIPT_RANGES,))
    assert juan.codec.version == 2
    maria = await _offline_then_drained(server, juan, 2, 20)
    assert 1 <= maria.pages < 20  # the stored twenty came in pages
    covered: list[int] = []
    async with asyncio.timeout(10):
        while len(covered) < 20:
            receipt = await juan.expect(f.Delivered)
            ids = range(receipt.first or receipt.message_id, receipt.message_id + 1)
            covered += [n for n in ids if receipt.covers(n)]
    assert covered == list(range(1, 21))  # each once, in order
    assert receipt.key == "k20"


async def test_a_version_2_client_that_did_not_ask_gets_a_receipt_per_message(server: ServerProcess) -> None:
    juan = await account(server.session_port, "juan")
    await _offline_then_drained(server, juan, 2, 5)
    receipts = [await juan.expect(f.Delivered, message_id=n) for n in range(1, 6)]
    assert [r.first for r in receipts] == [0] * 5


async def test_a_drain_of_large_messages_comes_in_pages_that_fit_a_frame(
    server_factory: ServerFactory,
) -> None:
    # Half of max_frame_bytes per page: two messages of 60,000 characters (240 kB at 4 bytes a
    # character, the most UTF-8 may take) fit one, a third would not.
    server = server_factory("--max-frame-bytes", "1000000")
    juan = await account(server.session_port, "juan")
    await (await account(server.session_port, "maria")).close()
    for n in range(1, 7):
        await juan.request(f.Send, to="maria", key=f"k{n}", text=str(n) * 60000)
    maria = await account(server.session_port, "maria", register=False)
    got = [await maria.expect(f.Message, message_id=n) for n in range(1, 7)]
    assert [m.text for m in got] == [str(n) * 60000 for n in range(1, 7)]
    assert maria.pages == 3
