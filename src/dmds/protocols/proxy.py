"""The PROXY protocol, version 1 (haproxy.org/download/2.9/doc/proxy-protocol.txt), sans-I/O.

A TCP load balancer (HAProxy `send-proxy`, nginx `proxy_protocol on`) writes one line before the
client's bytes saying whose connection it is: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n``. The
classic protocol needs it behind such a balancer, since the server dials pushes back to the address
the CONNECT came from: without the line, that is the balancer's.
"""

from __future__ import annotations

import ipaddress

#: The longest v1 header, CRLF included (the specification's figure).
MAX_HEADER = 107


class ProxyHeaderError(ValueError):
    """Not a PROXY v1 header: the connection does not come from the balancer it should."""


def parse(buffer: bytes) -> tuple[tuple[str, int] | None, int] | None:
    """(the client's (host, port), or None for ``UNKNOWN``; bytes the header took) once `buffer`
    holds the whole header; None while more is needed. Raises ProxyHeaderError."""
    end = buffer.find(b"\r\n", 0, MAX_HEADER)
    if end < 0:
        if len(buffer) >= MAX_HEADER or not b"PROXY ".startswith(buffer[:6]):
            raise ProxyHeaderError("no PROXY protocol header")
        return None
    parts = buffer[:end].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyHeaderError("no PROXY protocol header")
    if parts[1] == b"UNKNOWN":
        return None, end + 2  # the balancer's own connection (a health check): no client address
    if parts[1] not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyHeaderError(f"bad PROXY protocol header {buffer[:end]!r}")
    try:
        host = str(ipaddress.ip_address(parts[2].decode("ascii")))
        port = int(parts[4])
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"bad PROXY protocol header {buffer[:end]!r}") from None
    if not 0 < port < 65536:
        raise ProxyHeaderError(f"bad port in PROXY protocol header {buffer[:end]!r}")
    return (host, port), end + 2
