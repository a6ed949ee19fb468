"""SIGKILL the server while it is working: nothing acknowledged may be lost.

classic.md and issue 3: a SEND answered 0 is committed; a registered user stays registered; a stored
receipt stays stored; after a restart on the same data dir everything stored is delivered in order
with the same ids.
"""

from __future__ import annotations

import threading
import time

from tests import wire
from tests.conftest import ServerFactory
from tests.integration.listener import Listener, exchange, message, receipt


def test_sigkill_during_sends_loses_no_acknowledged_message(server_factory: ServerFactory) -> None:
    server = server_factory()
    port = server.port
    senders = 6
    for alias in ["bob", *[f"s{i}" for i in range(senders)]]:
        assert exchange(port, wire.register(f"User {alias}", alias, "01/02/2000")) == b"0\0"
    for i in range(senders):
        assert exchange(port, wire.connect(f"s{i}", Listener().port)) == b"0\0"

    acked: dict[int, str] = {}  # message id -> text, for every SEND answered 0
    registered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send_loop(i: int) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            text = f"s{i}-{n}"
            try:
                reply = exchange(port, wire.send(f"s{i}", "bob", text), timeout_s=5)
            except OSError:
                return  # the server is gone
            if len(reply) == 6 and reply[:2] == b"0\0":
                with lock:
                    acked[int.from_bytes(reply[2:], "big")] = text

    def register_loop() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            try:
                reply = exchange(port, wire.register("New User", f"new{n}", "01/01/2001"), timeout_s=5)
            except OSError:
                return
            if reply == b"0\0":
                registered.append(f"new{n}")

    threads = [threading.Thread(target=send_loop, args=(i,)) for i in range(senders)]
    threads.append(threading.Thread(target=register_loop))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # SIGKILL mid-flight
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 300, "the load did not get going"

    again = server_factory(data_dir=server.data_dir)
    for alias in registered:
        assert exchange(again.port, wire.register("Dup", alias, "01/01/2001")) == b"1\0", alias
    bob = Listener()
    assert exchange(again.port, wire.connect("bob", bob.port)) == b"0\0"
    highest = max(acked)
    pushes = bob.wait(highest, timeout_s=60)
    # Every id up to the highest acknowledged one, in order, each with the text it was acknowledged for.
    ids = [int(p.split(b"\0")[2]) for p in pushes]
    assert ids[:highest] == list(range(1, highest + 1))
    for p in pushes:
        mid = int(p.split(b"\0")[2])
        if mid in acked:
            sender = acked[mid].split("-")[0]
            assert p == message(sender, mid, acked[mid])


def test_sigkill_loses_no_stored_receipt(server_factory: ServerFactory) -> None:
    server = server_factory()
    port = server.port
    for alias in ("ana", "bob"):
        assert exchange(port, wire.register(f"User {alias}", alias, "01/02/2000")) == b"0\0"
    assert exchange(port, wire.connect("ana", Listener().port)) == b"0\0"
    count = 50
    for n in range(1, count + 1):
        assert exchange(port, wire.send("ana", "bob", f"m{n}"))[:2] == b"0\0"
    assert exchange(port, wire.disconnect("ana")) == b"0\0"
    bob = Listener()
    assert exchange(port, wire.connect("bob", bob.port)) == b"0\0"
    bob.wait(count)  # delivered: receipts are being stored for ana, who is away
    server.kill()

    again = server_factory(data_dir=server.data_dir)
    bob_again = Listener()
    ana = Listener()
    assert exchange(again.port, wire.connect("ana", ana.port)) == b"0\0"
    assert exchange(again.port, wire.connect("bob", bob_again.port)) == b"0\0"
    # Each message either had its delivery recorded (then its receipt is stored) or is delivered
    # again now (then its receipt follows): ana gets a receipt for every one of them.
    got = ana.wait(count, timeout_s=30)
    assert sorted(got) == sorted(receipt(n) for n in range(1, count + 1))
