"""Wrong passwords sent all at once (found by the flood): the limits of wrong passwords per alias and
per address (session.md §12) must hold however many attempts are in flight, since each costs an
argon2 hash (64 MiB and ~0.3 s of a core at the defaults)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import Connection, Role
from dmds.settings import AccountSettings
from tests.conftest import ServerFactory

pytestmark = pytest.mark.timeout(60)

ATTEMPTS = 100


async def wrong_login(port: int, alias: str, answers: Counter[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codec = Connection(Role.CLIENT)
    writer.write(
        codec.send(f.Hello(version=f.VERSION), 0)
        + codec.send(f.Login(id=1, alias=alias, password="not the password"), 0)
    )
    try:
        while data := await reader.read(65536):
            codec.receive_data(data, 0)
            while (event := codec.next_event()) is not None:
                if isinstance(event, f.Error) and event.re == 1:
                    answers[event.code.name] += 1
                    return
    finally:
        writer.close()


async def test_concurrent_wrong_passwords_are_limited_like_sequential_ones(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    answers: Counter[str] = Counter()
    await asyncio.gather(
        *(wrong_login(server.session_port, f"user{n % 7}", answers) for n in range(ATTEMPTS))
    )
    assert sum(answers.values()) == ATTEMPTS
    # Every BAD_CREDENTIALS is a password hashed; one address may have 4 x login_failures of them
    # (and what was already being hashed when the limit was reached: at most as many again).
    per_address = 4 * AccountSettings().login_failures
    assert answers["BAD_CREDENTIALS"] <= 2 * per_address, answers
    assert answers["RATE_LIMITED"] >= ATTEMPTS - 2 * per_address
