"""The PROXY protocol v1 header, byte by byte and broken in every way a peer could."""

from __future__ import annotations

import pytest

from dmds.protocols.proxy import MAX_HEADER, ProxyHeaderError, parse

LINE = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7000\r\n"


def test_the_header_byte_by_byte_then_the_request() -> None:
    data = LINE + b"SEND\0a\0b\0hi\0"
    for end in range(len(LINE) - 1):
        assert parse(data[:end]) is None  # more is needed
    assert parse(data) == (("192.0.2.7", 56324), len(LINE))
    assert parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 7000\r\n") == (("2001:db8::1", 4000), 46)
    assert parse(b"PROXY UNKNOWN\r\n") == (None, 15)


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\0a\0b\0hi\0",  # a client that bypassed the balancer
        b"PROXZ",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",
        b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 0 7000\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 7000\r\n",
        b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
        b"PROXY " + b"1" * MAX_HEADER,
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)
