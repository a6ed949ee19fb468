"""SIGTERM is a graceful stop: nothing acknowledged is lost, nothing is acknowledged unstored.

Issue 13: the server stops accepting, answers the requests it has read, tells session clients to go
(GoAway, to those that ask), flushes the last commit and exits 0 within `stop_timeout_s`. A client
of ours reconnects at once and sends again what was not answered; the keys make that safe.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

from dmds.client.session import Disconnected, Message, SessionClient
from dmds.protocols.session import frames as f
from tests import wire
from tests.conftest import FAST, ServerFactory
from tests.integration.listener import exchange
from tests.integration.session_wire import account

STOP_TIMEOUT_S = 5.0
SENDS = 2000
WINDOW = 100


async def _account(port: int, alias: str) -> None:
    client = await SessionClient.connect("127.0.0.1", port)
    await client.register(alias, f"User {alias}", "01/02/2000", "a long enough password")
    await client.close()


async def test_sigterm_under_load_loses_nothing_and_acknowledges_nothing_unstored(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    extra = (*FAST, "--stop-timeout-s", str(STOP_TIMEOUT_S), "--max-send-rate", "0")
    server = server_factory(*extra)
    port = server.session_port
    for alias in ("ana", "bob"):
        await _account(port, alias)
    events: list[object] = []
    ana = await SessionClient.connect("127.0.0.1", port, reconnect=True, on_event=events.append)
    await ana.login("ana", "a long enough password")

    accepted: dict[str, int] = {}  # text -> message id, for every Accepted
    slots = asyncio.Semaphore(WINDOW)

    async def send(n: int) -> None:
        async with slots:
            answer = await ana.send("bob", f"m{n}", key=f"k{n}")
            accepted[f"m{n}"] = answer.message_id

    sends = [asyncio.ensure_future(send(n)) for n in range(1, SENDS + 1)]
    while len(accepted) < SENDS // 4:
        await asyncio.sleep(0.01)
    before = len(accepted)

    started = time.monotonic()
    code = await asyncio.to_thread(server.stop, signal.SIGTERM, STOP_TIMEOUT_S + 10)
    took = time.monotonic() - started
    assert code == 0, server.log()
    assert took < STOP_TIMEOUT_S + 3, f"the stop took {took:.1f} s"
    assert "stopping: answering the requests in flight" in server.log()
    stopping = [e for e in events if isinstance(e, Disconnected)]
    assert stopping
    assert "the server is stopping" in stopping[0].reason  # told by GoAway
    assert not any(s.done() and s.exception() for s in sends)  # nothing failed: pending, or answered

    # The same store and port again: the sender's pending sends go out again and are answered.
    server_factory(*extra, "--session-port", str(port), data_dir=server.data_dir)
    await asyncio.wait_for(asyncio.gather(*sends), 60)
    assert len(accepted) == SENDS
    assert before < SENDS
    await ana.close()

    # Every acknowledged message is stored once, with its id: the recipient gets each exactly once.
    got: dict[str, int] = {}
    done = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, Message):
            assert event.text not in got, f"{event.text} delivered twice"
            got[event.text] = event.message_id
            if len(got) == SENDS:
                done.set()

    bob = await SessionClient.connect("127.0.0.1", port, on_event=on_event)
    await bob.login("bob", "a long enough password")
    await asyncio.wait_for(done.wait(), 30)
    assert got == accepted
    assert sorted(got.values()) == list(range(1, SENDS + 1))
    await bob.close()


async def test_a_client_without_goaway_gets_its_answers_then_the_close(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, "--stop-timeout-s", str(STOP_TIMEOUT_S), "--max-send-rate", "0")
    await _account(server.session_port, "bob")
    # A version 2 connection that did not ask for "goaway", with sends in flight.
    ana = await account(server.session_port, "ana")
    for n in range(1, 201):
        ana.write(f.Send(id=100 + n, to="bob", key=f"k{n}", text=f"m{n}"))
    stopper = asyncio.ensure_future(asyncio.to_thread(server.stop, signal.SIGTERM, STOP_TIMEOUT_S + 10))
    await ana.wait_closed(15)
    assert await stopper == 0
    frames = ana.inbox
    assert not any(isinstance(frame, f.GoAway) for frame in frames)
    last = frames[-1]
    assert isinstance(last, f.Error), frames[-5:]
    assert last.code == 14
    assert "shutting down" in last.message
    # Every Send the server read was answered before the close (those it did not read, the client
    # sends again: its keys make that safe).
    answered = [frame.re for frame in frames if isinstance(frame, f.Accepted)]
    assert answered
    assert answered == list(range(101, 101 + len(answered)))


def test_classic_requests_in_flight_are_answered_and_new_ones_refused(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, "--stop-timeout-s", str(STOP_TIMEOUT_S))
    port = server.port
    # A REGISTER sent in two parts: in flight when the stop begins, answered after it.
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    request = wire.register("Half Way", "halfway", "01/02/2000")
    sock.sendall(request[:5])
    time.sleep(0.2)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sock.sendall(request[5:])
    assert sock.recv(16) == b"0\0"
    sock.close()
    assert server.stop(timeout_s=STOP_TIMEOUT_S + 10) == 0
    # The user it registered is there after a restart, and the closed port refused nobody's answer.
    again = server_factory(*FAST, data_dir=server.data_dir)
    assert exchange(again.port, wire.register("Half Way", "halfway", "01/02/2000")) == b"1\0"


def test_a_lingering_classic_connection_does_not_hold_the_stop(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST, "--stop-timeout-s", str(STOP_TIMEOUT_S), "--max-field-bytes", "16")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    # A field past the limit: answered at once, then the server lingers for what the client sends.
    sock.sendall(b"REGISTER\0" + b"x" * 64)
    assert sock.recv(16) == b"2\0"
    started = time.monotonic()
    assert server.stop(timeout_s=STOP_TIMEOUT_S + 10) == 0
    # Answered already: the stop ends the linger instead of waiting for it (30 s) or its own bound.
    assert time.monotonic() - started < STOP_TIMEOUT_S / 2
    sock.close()
