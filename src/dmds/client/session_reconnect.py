"""Where and when the session client connects again: addresses, their order, backoff, presence.

Server addresses are written by people as ``host[:port]``, comma-separated (the nodes of a
cluster). When connecting, the client tries its current address first; when reconnecting, the next
one first, so that a node that died is left at once for one that is up. Between attempts it waits
a backoff that doubles up to a bound, shortened by a random jitter of up to half. After a
reconnection, the presence it knew is compared with the server's to say who came and went.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Final

from dmds.protocols.session.frames import PresenceChanged

__all__ = ["DEFAULT_PORT", "addresses_to_try", "backoff", "parse_servers", "presence_changes"]

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
