"""A trivial classic server: answers every REGISTER with 0 at once, stores nothing.

The ceiling for the classic path on this machine: what remains is the cost of TCP connections and of
the Python event loop. dmds is compared with it as a ratio, run side by side.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Answer(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.buf.count(b"\0") >= 4 and self.transport is not None:  # REGISTER and its 3 fields
            self.transport.write(b"0\0")
            self.transport.close()


async def _main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answer, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
