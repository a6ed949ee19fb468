"""The server's full garbage collections run on their clock (gc_full_interval_s), so that the
cycles of closed connections are still freed while the automatic schedule leaves them alone."""

from __future__ import annotations

import time

from tests.conftest import ServerFactory
from tests.integration.session_wire import account


async def test_full_collections_run_on_their_clock(server_factory: ServerFactory) -> None:
    server = server_factory("--gc-full-interval-s", "0.2", "--log-level", "DEBUG")
    for n in range(3):  # connections come and go: their cycles are what a full collection frees
        await (await account(server.session_port, f"user{n}")).close()
    deadline = time.monotonic() + 10
    while server.log().count("full garbage collection:") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.log().count("full garbage collection:") >= 2


async def test_zero_keeps_pythons_own_schedule(server_factory: ServerFactory) -> None:
    server = server_factory("--gc-full-interval-s", "0", "--log-level", "DEBUG")
    await (await account(server.session_port, "ana")).close()
    time.sleep(0.5)
    assert "full garbage collection:" not in server.log()
