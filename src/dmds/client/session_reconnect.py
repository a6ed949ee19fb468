"""Where and when the session client connects again, and how it resumes its session.

Server addresses are written by people as ``host[:port]``, comma-separated (the nodes of a
cluster). When connecting, the client tries its current address first, then the others in turn;
when reconnecting, the next one first. Between attempts it waits a backoff that doubles up to a
bound, shortened by a random jitter of up to half.

Reconnection (``reconnect=True``). When the connection drops (not when the client closes it, and
not when the server said it must not come back: replaced by a newer login, protocol errors), or
the server says it is stopping (`GoAway`, which the client asks for in Hello; then the first
attempt is made at once, to the next address first):

1. Requests that may safely be sent twice stay pending: `Send` (its key makes the server answer a
   resend with the id of the first and never deliver it twice), `History` and `Fetch` (reads). Every
   other request in flight fails with `ConnectionLost`: whether it took effect is unknown, and
   repeating it is not harmless (a chunk of an upload, a login...). Acks and MarkReads not yet
   written are kept to be written later. Requests made while reconnecting wait, unsent.
2. The client reconnects, after a backoff that doubles from `RECONNECT_FIRST_DELAY_S` up to
   `RECONNECT_MAX_DELAY_S` (with jitter), at most `RECONNECT_ATTEMPTS` times, to `host` and `port`
   as they are at each attempt: a program may point them at another server meanwhile. With
   `alternates` (the other nodes of a cluster) each attempt tries the addresses in turn, the next
   one first: a node that died is left at once for one that is up.
3. On the new connection (Hello/Welcome), it logs in again with its token (`Login(token=...)`) if it
   was logged in, and subscribes again if it was subscribed: the `Presence` answer is compared with
   what it knew and the differences become `PresenceChanged` events.
4. Then it writes every pending request, in the order they were first made, with their original
   keys: a Send the server had committed before the drop is answered `Accepted` with the same id, one
   it never saw is committed now. Their `send()` calls return normally. A `Reconnected` event follows.

If every attempt fails, or the token is refused (revoked: logged out elsewhere, password changed;
expired), the client gives up: pending requests fail with `ConnectionLost`, a `Disconnected` event
with ``reconnecting=False`` ends the events, and the client is closed. No accepted message is lost
either way: `Accepted` is only ever given for a message the server has committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Final

from dmds.client.oserrors import os_reason
from dmds.client.session_errors import ConnectionLost, SessionClientError, SessionError, expect
from dmds.client.session_link import Link
from dmds.client.session_outbox import Outbox
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.frames import PresenceChanged, Welcome

__all__ = [
    "DEFAULT_PORT",
    "addresses_to_try",
    "backoff",
    "open_any",
    "parse_servers",
    "presence_changes",
    "reconnect",
    "resume_session",
]

# The client's log lines all go to the logger of its public module, whichever part writes them.
log = logging.getLogger("dmds.client.session")

#: The session protocol's usual port (`dmds serve --session-port`).
DEFAULT_PORT: Final = 7001

Address = tuple[str, int]


def parse_servers(text: str, default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Addresses as people write them: ``host``, ``host:port``, ``[v6]:port``, comma-separated (the
    nodes of a cluster). Raises ValueError for an empty list or a port that is not one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, port = part, default_port
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif part.count(":") == 1:
            host, _, number = part.partition(":")
            port = int(number)
        if not host or not 0 < port < 65536:
            raise ValueError(f"not a server address: {part!r}")
        out.append((host, port))
    if not out:
        raise ValueError("no server address given")
    return out


def addresses_to_try(current: Address, alternates: Iterable[Address], *, first: bool) -> list[Address]:
    """Every address once: `current` first when connecting, the next one first when reconnecting."""
    addresses = [current, *(a for a in alternates if a != current)]
    if not first and len(addresses) > 1:
        addresses = addresses[1:] + addresses[:1]
    return addresses


async def open_any(
    addresses: Iterable[Address],
    new_link: Callable[[], Link],
    *,
    ssl: _ssl.SSLContext | None,
    server_hostname: str | None,
    timeout_s: float,
) -> tuple[Link, Welcome, Address]:
    """A new link past Hello/Welcome to the first of `addresses` that answers, its Welcome and
    that address; raises the error of the last one if none does."""
    error: BaseException | None = None
    for host, port in addresses:
        link = new_link()
        try:
            welcome = await link.open(
                host, port, ssl=ssl, server_hostname=server_hostname, timeout_s=timeout_s
            )
        except (OSError, SessionError) as exc:
            error = exc
            log.info("cannot connect to %s:%d: %s", host, port, os_reason(exc))
            continue
        return link, welcome, (host, port)
    assert error is not None
    raise error


def backoff(
    attempts: int, first_s: float, max_s: float, *, at_once: bool
) -> Iterator[tuple[int, float | None]]:
    """(attempt number, seconds to wait before it) for each attempt; None: no wait (`at_once`, the
    first after a GoAway: the next node is up, most likely)."""
    delay = first_s
    for attempt in range(1, attempts + 1):
        if at_once and attempt == 1:
            yield attempt, None
            continue
        yield attempt, delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, max_s)


def presence_changes(before: set[str], now: set[str]) -> list[PresenceChanged]:
    """The PresenceChanged events that lead from `before` to `now`: arrivals, then departures."""
    came = [PresenceChanged(alias=alias, online=True) for alias in sorted(now - before)]
    went = [PresenceChanged(alias=alias, online=False) for alias in sorted(before - now)]
    return came + went


async def resume_session(
    outbox: Outbox,
    link: Link,
    token: str | None,
    on_login: Callable[[f.LoggedIn], None],
    *,
    subscribe: bool,
) -> f.Presence | None:
    """On a new link, log in again with `token` (None: the client was not logged in; "": revoked)
    and pass the answer to `on_login`, then subscribe again if `subscribe`: returns its Presence."""
    if token is not None:
        if not token:
            raise SessionError(ErrorCode.BAD_TOKEN, "the session token was revoked")
        answer = await outbox.call(f.Login(id=outbox.next_id(), token=token), link)
        on_login(expect(answer, f.LoggedIn))
    if not subscribe:
        return None
    return expect(await outbox.call(f.Subscribe(id=outbox.next_id()), link), f.Presence)


async def reconnect(
    open_link: Callable[[], Awaitable[Link]],
    restore: Callable[[Link], Awaitable[None]],
    address: Callable[[], Address],
    reason: str,
    *,
    attempts: int,
    first_delay_s: float,
    max_delay_s: float,
    at_once: bool,
) -> Link:
    """A new link with the session restored on it (`open_link`, then `restore`), trying up to
    `attempts` times; raises ConnectionLost, saying why, when there is no way back."""
    for attempt, wait_s in backoff(attempts, first_delay_s, max_delay_s, at_once=at_once):
        if wait_s is not None:
            await asyncio.sleep(wait_s)
        try:
            link = await open_link()
        except (OSError, SessionError) as exc:
            reason = os_reason(exc)
            log.info("reconnection %d to %s:%d failed: %s", attempt, *address(), reason)
            continue
        try:
            await restore(link)
        except ConnectionLost as exc:
            reason = str(exc)
            continue
        except SessionClientError as exc:  # the token refused (or a server bug): no way back
            link.close()
            if isinstance(exc, SessionError) and exc.code is ErrorCode.INTERNAL:
                reason = str(exc)
                continue
            raise ConnectionLost(f"could not resume the session: {exc}") from None
        except BaseException:
            link.abort()
            raise
        log.info("session connection back (attempt %d)", attempt)
        return link
    raise ConnectionLost(f"{reason}; gave up after {attempts} attempts to reconnect")
