"""Typing notices: ephemeral, rate-limited, only to clients that asked for them."""

from __future__ import annotations

import asyncio

from dmds.protocols.session import frames as f
from tests.conftest import ServerFactory
from tests.integration.session_wire import Peer, account

TYPING = (f.TYPING,)


async def quiet(peer: Peer, seconds: float = 0.5) -> list[object]:
    """What `peer` receives in `seconds` (a Ping round trip proves the connection still answers)."""
    await asyncio.sleep(seconds)
    peer.write(f.Ping(n=41))
    await peer.expect(f.Pong, n=41)
    received, peer.inbox = list(peer.inbox), []
    return received


async def test_typing_reaches_the_recipient_once_per_interval(server_factory: ServerFactory) -> None:
    server = server_factory("--typing-interval-s", "30")
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria", features=TYPING)
    for _ in range(5):
        juan.write(f.Typing(to="maria"))
    assert await maria.expect(f.TypingFrom) == f.TypingFrom(sender="juan")
    assert [x for x in await quiet(maria) if isinstance(x, f.TypingFrom)] == []  # the other four dropped
    assert await quiet(juan) == []  # never answered, and no error


async def test_typing_is_not_pushed_to_a_client_that_did_not_ask(server_factory: ServerFactory) -> None:
    server = server_factory()
    juan = await account(server.session_port, "juan")
    old = await account(server.session_port, "maria")  # a version 1 client from before typing
    juan.write(f.Typing(to="maria"))
    assert await quiet(old) == []


async def test_typing_before_login_or_to_nobody_is_dropped(server_factory: ServerFactory) -> None:
    server = server_factory()
    stranger = await Peer.open(server.session_port, features=TYPING)
    stranger.write(f.Typing(to="maria"))
    assert await quiet(stranger) == []
    juan = await account(server.session_port, "juan", features=TYPING)
    juan.write(f.Typing(to="nobody"))
    juan.write(f.Typing(to="juan"))
    assert await quiet(juan) == []
