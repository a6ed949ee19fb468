"""The atheris entry points, one per target: a control byte picks segmentation, limits, headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from dmds.bench.fuzz.classic import classic_client_oracle, classic_server_oracle
from dmds.bench.fuzz.rule import SELF_CHECK, SESSION_SMALL_FRAME, TARGETS, RuleBroken, in_pieces
from dmds.bench.fuzz.session import session_oracle
from dmds.bench.fuzz.soap import SoapOracle

_CONTENT_TYPES: Final = (
    "text/xml; charset=utf-8",
    "application/soap+xml; charset=utf-8",
    'multipart/related; type="application/xop+xml"; boundary="b"; start-info="text/xml"',
    "",
)
_SOAP_ACTIONS: Final = ('"modify_text"', "", '"nope"', "modify_text")


def target_function(name: str) -> Callable[[bytes], None]:
    """The atheris entry point of target `name`. The codecs are imported here, inside
    `instrument_imports()` when fuzzing."""
    if name == "classic-server":
        small, defaults = classic_server_oracle(), classic_server_oracle(256, 65536)

        def classic_server(data: bytes) -> None:
            # Control byte: bits 0-2, piece size 1..8 (compared against the whole); bit 7, default limits.
            if not data:
                return
            ctrl, body = data[0], data[1:]
            verdict = defaults if ctrl & 0x80 else small
            whole = verdict([body])
            if verdict(in_pieces(body, (ctrl & 7) + 1)) != whole:
                raise RuleBroken("the verdict depends on the segmentation")

        return classic_server
    if name == "classic-client":
        reply_verdict, push_verdict = classic_client_oracle()

        def classic_client(data: bytes) -> None:
            # Control byte: bits 0-1, the request (SEND, CONNECTEDUSERS, REGISTER); bits 2-4, piece size.
            if not data:
                return
            ctrl, body = data[0], data[1:]
            pieces = in_pieces(body, (ctrl >> 2) & 7)
            if reply_verdict(ctrl & 3, [body]) != reply_verdict(ctrl & 3, pieces):
                raise RuleBroken("the reply verdict depends on the segmentation")
            if push_verdict([body]) != push_verdict(pieces):
                raise RuleBroken("the push verdict depends on the segmentation")

        return classic_client
    if name in ("session-server", "session-client"):
        verdict = session_oracle(name.removeprefix("session-"))

        def session(data: bytes) -> None:
            # Control byte: bit 0, no handshake first; bit 1, unframed (WebSocket); bit 2, 160-byte
            # frame limit; bits 3-5, piece size (0: whole, compared against the whole).
            if not data:
                return
            ctrl, body = data[0], data[1:]
            options: dict[str, Any] = {
                "handshake": not ctrl & 1,
                "framed": not ctrl & 2,
                "max_frame_bytes": SESSION_SMALL_FRAME if ctrl & 4 else 1 << 20,
            }
            whole = verdict(body, **options)
            chunk = (ctrl >> 3) & 7
            if options["framed"] and chunk and repr(verdict(body, chunk=chunk, **options)) != repr(whole):
                raise RuleBroken("the verdict depends on the segmentation")

        return session
    if name == "soap":
        oracle = SoapOracle()

        def soap(data: bytes) -> None:
            # Control byte: bits 0-1, Content-Type; bits 2-3, SOAPAction; bit 4, Accept JSON;
            # bits 5-6, method (POST, POST, GET with the data as query, PUT); bit 7, no Content-Length.
            if not data:
                return
            ctrl, body = data[0], data[1:]
            oracle.text(body.decode("utf-8", "surrogateescape"))
            kind = (ctrl >> 5) & 3
            oracle.request(
                b"" if kind == 2 else body,
                method=("POST", "POST", "GET", "PUT")[kind],
                content_type=_CONTENT_TYPES[ctrl & 3] or None,
                soap_action=_SOAP_ACTIONS[(ctrl >> 2) & 3],
                accept="application/json" if ctrl & 0x10 else "",
                query=body.decode("latin-1") if kind == 2 else "",
                content_length=not ctrl & 0x80,
            )

        return soap
    if name == SELF_CHECK:

        def self_check(data: bytes) -> None:
            # Broken on purpose: the fuzzer finds b"bug" from the seed b"bu" in a few thousand runs.
            if data[:1] == b"b" and data[1:2] == b"u" and data[2:3] == b"g":
                raise RuleBroken("self-check: the deliberate bug was found")

        return self_check
    raise ValueError(f"unknown target {name!r}; the targets: {', '.join((*TARGETS, SELF_CHECK))}")
