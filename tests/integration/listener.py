"""Raw-socket helpers for integration tests: one request per connection, and a push listener."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests import wire


def exchange(
    port: int,
    data: bytes,
    *,
    chunked: bool = False,
    timeout_s: float = 10.0,
    host: str = "127.0.0.1",
    source: str | None = None,
) -> bytes:
    """Send `data` as the original client did, read the reply until the server closes."""
    bind = (source, 0) if source is not None else None
    with socket.create_connection((host, port), timeout=timeout_s, source_address=bind) as sock:
        if chunked:  # the original client wrote each text and each NUL with separate send calls
            for part in data.split(b"\0")[:-1]:
                sock.sendall(part)
                sock.sendall(b"\0")
        else:
            sock.sendall(data)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out


class Listener:
    """A client's push listener: records the bytes of each connection the server opens to it."""

    def __init__(self, *, accept: bool = True, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.pushes: list[bytes] = []
        self._cond = threading.Condition()
        self._accept = accept
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
            with self._cond:
                self.pushes.append(data)
                self._cond.notify_all()

    def wait(self, count: int, timeout_s: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.pushes) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} pushes, got {self.pushes}")
                self._cond.wait(left)
            return list(self.pushes)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone leaves the port listening.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def message(sender: str, mid: int, text: str) -> bytes:
    return wire.fields("SEND_MESSAGE", sender, str(mid), text)


def receipt(mid: int) -> bytes:
    return wire.fields("SEND_MESS_ACK", str(mid))


def sent(mid: int) -> bytes:
    return b"0\0" + mid.to_bytes(4, "big")
