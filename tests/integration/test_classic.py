"""The real `dmds serve` on 127.0.0.1, driven with raw sockets as the original client drives it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests import wire
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.listener import Listener, exchange, message, receipt, sent


def register(port: int, *aliases: str) -> None:
    for alias in aliases:
        assert exchange(port, wire.register(f"User {alias}", alias, "01/02/2000")) == b"0\0"


def test_contract_example(server: ServerProcess) -> None:
    juan, maria = Listener(), Listener()
    port = server.port
    assert exchange(port, b"REGISTER\0Juan Perez\0juan123\x0001/02/2000\0", chunked=True) == b"0\0"
    assert exchange(port, b"REGISTER\0Maria Lopez\0maria123\x0003/04/2001\0", chunked=True) == b"0\0"
    assert exchange(port, wire.connect("juan123", juan.port), chunked=True) == b"0\0"
    assert exchange(port, wire.connect("maria123", maria.port), chunked=True) == b"0\0"
    assert exchange(port, b"SEND\0juan123\0maria123\0Hola soy Juan\0", chunked=True) == b"0\0\x00\x00\x00\x01"
    assert maria.wait(1) == [b"SEND_MESSAGE\0juan123\x001\0Hola soy Juan\0"]
    assert juan.wait(1) == [b"SEND_MESS_ACK\x001\0"]
    assert exchange(port, wire.connected_users("juan123")) == b"0\x002\0juan123\0maria123\0"


def test_result_codes(server: ServerProcess) -> None:
    port = server.port
    listener = Listener()
    register(port, "juan", "maria")
    assert exchange(port, wire.register("Again", "juan", "01/01/1999")) == b"1\0"
    assert exchange(port, wire.register("Bad date", "pedro", "1999-01-01")) == b"2\0"
    assert exchange(port, wire.unregister("ghost")) == b"1\0"
    assert exchange(port, wire.connect("ghost", listener.port)) == b"1\0"
    assert exchange(port, wire.connect("juan", listener.port)) == b"0\0"
    assert exchange(port, wire.connect("juan", listener.port)) == b"2\0"
    assert exchange(port, wire.disconnect("ghost")) == b"1\0"
    assert exchange(port, wire.disconnect("maria")) == b"2\0"
    assert exchange(port, wire.send("juan", "ghost", "x")) == b"1\0\0\0\0\0"
    assert exchange(port, wire.send("ghost", "juan", "x")) == b"1\0\0\0\0\0"
    # dmds: a registered sender who is not connected gets 2, and nothing is delivered.
    assert exchange(port, wire.send("maria", "juan", "x")) == b"2\0\0\0\0\0"
    assert exchange(port, wire.connected_users("maria")) == b"1\0"
    assert exchange(port, wire.connected_users("ghost")) == b"2\0"
    assert exchange(port, wire.disconnect("juan")) == b"0\0"
    assert exchange(port, wire.unregister("juan")) == b"0\0"
    time.sleep(0.3)
    assert listener.pushes == []


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"", b"2\0"),
        (b"\0", b"2\0"),
        (b"BOGUS\0a\0", b"2\0"),
        (b"REGISTER\0Juan\0", b"2\0"),
        (b"CONNECT\0juan\0", b"3\0"),
        (b"CONNECT\0juan\0notaport\0", b"3\0"),
        (b"CONNECT\0juan\x0099999\0", b"3\0"),
        (b"DISCONNECT\0" + b"x" * 300 + b"\0", b"3\0"),
        (b"SEND\0a\0b\0", b"2\0\0\0\0\0"),
        (b"SEND\0a\0b\0\xff\xfe\0", b"2\0\0\0\0\0"),
        (b"UNREGISTER\0\xc3\0", b"2\0"),
    ],
)
def test_bad_requests_get_the_other_error_code(server: ServerProcess, data: bytes, reply: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(100):
            got += chunk
    assert got == reply
    # ...and the server goes on serving.
    register(server.port, "still-here")


def test_oversized_text_is_answered_while_the_client_is_still_sending(server_factory: ServerFactory) -> None:
    server = server_factory("--max-text-bytes", "1000")
    register(server.port, "juan")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"SEND\0juan\0juan\0" + b"x" * 5000)  # no NUL: never a complete field
        got = b""
        while chunk := sock.recv(100):
            got += chunk
    assert got == b"2\0\0\0\0\0"
    assert "longer than 1000 bytes" in server.log()


def test_a_stalled_half_request_times_out_and_harms_no_one(server: ServerProcess) -> None:
    register(server.port, "juan")
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stalled.sendall(b"CONNECT\0juan\0")
    # Others are served while it stalls.
    start = time.monotonic()
    register(server.port, "maria")
    assert time.monotonic() - start < 1.5
    got = stalled.recv(100)  # request_timeout_s is 2 in this fixture
    assert got == b"3\0"
    stalled.close()
    assert "not complete within" in server.log()


def test_offline_messages_are_stored_and_delivered_in_order_with_receipts(server: ServerProcess) -> None:
    port = server.port
    juan, maria = Listener(), Listener()
    register(port, "juan", "maria")
    assert exchange(port, wire.connect("juan", juan.port)) == b"0\0"
    for i in range(1, 6):
        assert exchange(port, wire.send("juan", "maria", f"mensaje {i}")) == sent(i)
    assert exchange(port, wire.disconnect("juan")) == b"0\0"
    assert exchange(port, wire.connect("maria", maria.port)) == b"0\0"
    assert maria.wait(5) == [message("juan", i, f"mensaje {i}") for i in range(1, 6)]
    # dmds: receipts for stored messages are kept for the disconnected sender...
    time.sleep(0.2)
    assert juan.pushes == []
    juan2 = Listener()
    assert exchange(port, wire.connect("juan", juan2.port)) == b"0\0"
    assert juan2.wait(5) == [receipt(i) for i in range(1, 6)]


def test_unreachable_listener_keeps_the_message_and_disconnects(server: ServerProcess) -> None:
    port = server.port
    juan, gone = Listener(), Listener()
    register(port, "juan", "maria")
    assert exchange(port, wire.connect("juan", juan.port)) == b"0\0"
    assert exchange(port, wire.connect("maria", gone.port)) == b"0\0"
    gone.close()  # the listener vanishes: connection refused
    assert exchange(port, wire.send("juan", "maria", "guardado")) == sent(1)
    deadline = time.monotonic() + 5
    while exchange(port, wire.connected_users("juan")) != b"0\x001\0juan\0":
        assert time.monotonic() < deadline, "maria was not treated as disconnected"
        time.sleep(0.05)
    back = Listener()
    assert exchange(port, wire.connect("maria", back.port)) == b"0\0"
    assert back.wait(1) == [message("juan", 1, "guardado")]
    assert juan.wait(1) == [receipt(1)]


def test_a_listener_that_never_reads_delays_no_one_else(server: ServerProcess) -> None:
    port = server.port
    sender, fast = Listener(), Listener()
    # Accepts (the kernel does) but never reads: a full receive buffer stalls the pushes to it.
    silent = socket.create_server(("127.0.0.1", 0))
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent_port = silent.getsockname()[1]
    register(port, "juan", "slow", "fast")
    assert exchange(port, wire.connect("juan", sender.port)) == b"0\0"
    assert exchange(port, wire.connect("slow", silent_port)) == b"0\0"
    assert exchange(port, wire.connect("fast", fast.port)) == b"0\0"
    big = "x" * 60000
    for _ in range(3):
        assert exchange(port, wire.send("juan", "slow", big))[:2] == b"0\0"
    start = time.monotonic()
    assert exchange(port, wire.send("juan", "fast", "hola")) == sent(1)
    assert fast.wait(1, timeout_s=1.5) == [message("juan", 1, "hola")]
    assert time.monotonic() - start < 1.5
    silent.close()


def test_dozens_of_concurrent_senders_in_order(server: ServerProcess) -> None:
    port = server.port
    pairs = 24
    per_pair = 15
    listeners = [Listener() for _ in range(pairs)]
    senders = [Listener() for _ in range(pairs)]
    for i in range(pairs):
        register(port, f"s{i}", f"r{i}")
        assert exchange(port, wire.connect(f"s{i}", senders[i].port)) == b"0\0"
        assert exchange(port, wire.connect(f"r{i}", listeners[i].port)) == b"0\0"
    errors: list[str] = []

    def run(i: int) -> None:
        for n in range(1, per_pair + 1):
            got = exchange(port, wire.send(f"s{i}", f"r{i}", f"m{n}"), chunked=True)
            if got != sent(n):
                errors.append(f"pair {i} message {n}: {got!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for i in range(pairs):
        assert listeners[i].wait(per_pair) == [message(f"s{i}", n, f"m{n}") for n in range(1, per_pair + 1)]
        assert senders[i].wait(per_pair) == [receipt(n) for n in range(1, per_pair + 1)]


def test_restart_keeps_users_and_messages_and_disconnects_everyone(server_factory: ServerFactory) -> None:
    server = server_factory()
    register(server.port, "juan", "maria")
    juan = Listener()
    assert exchange(server.port, wire.connect("juan", juan.port)) == b"0\0"
    assert exchange(server.port, wire.send("juan", "maria", "antes")) == sent(1)
    assert server.stop() == 0
    assert "Traceback" not in server.log()
    again = server_factory(data_dir=server.data_dir)
    assert exchange(again.port, wire.register("X", "juan", "01/01/2000")) == b"1\0"
    assert exchange(again.port, wire.connected_users("juan")) == b"1\0"  # not connected any more
    maria = Listener()
    assert exchange(again.port, wire.connect("maria", maria.port)) == b"0\0"
    assert maria.wait(1) == [message("juan", 1, "antes")]


def test_connections_over_the_limit_are_refused_and_service_resumes(server_factory: ServerFactory) -> None:
    server = server_factory("--max-connections", "2", "--request-timeout-s", "2")
    # The kernel's accept queue is in order: both held slots are taken before the extra one is seen.
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
    for sock in held:
        sock.sendall(b"REGIS")  # half a request: each holds a slot until its timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
        extra.sendall(wire.register("X", "x", "01/01/2000"))
        # Closed at once, with no reply: a reset if the request had arrived before the close, an
        # end of stream if the close came first (which of the two a loaded host gives is a race).
        with contextlib.suppress(ConnectionResetError):
            assert extra.recv(100) == b""
    for sock in held:
        assert sock.recv(100) == b"2\0"  # timed out: other error
        sock.close()
    time.sleep(0.2)
    register(server.port, "after")
    assert server.log().count("refusing new ones") == 1


def test_a_second_server_on_the_same_data_dir_is_refused(server_factory: ServerFactory) -> None:
    first = server_factory()
    with pytest.raises(RuntimeError, match="database is locked"):
        server_factory(data_dir=first.data_dir)
    register(first.port, "unharmed")
