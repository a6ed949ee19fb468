"""Fuzzing of the wire codecs and the SOAP normaliser: oracles, atheris targets, and `run_fuzz`.

The rule: fed random and mutated input, the classic and session codecs and the SOAP normaliser never
raise anything but their protocol error. The oracles below check it, one per target. The hypothesis
tests in tests/fuzz use them on structured input, and atheris (libFuzzer) runs them here on
coverage-guided mutations. An oracle that sees a forbidden outcome raises `RuleBroken`. Any other
exception the code under test raises propagates, so the fuzzer records it as a crash.

Outcomes allowed per target
---------------------------
classic-server
    `ServerConnection` (32-byte fields, 64-byte SEND text, or the defaults), fed any bytes in any
    segmentation and then EOF. `next_event()` returns None before EOF, then either one `Request` or
    a classic `RemoteProtocolError`. The request's texts are UTF-8 within their limits, CONNECT's
    port is 1..65535, and the request re-encodes to the bytes it came from. For an error, `op` is
    the request class once its name has arrived, else None, and the error reply is the operation's
    "other error": ``3\\0`` for CONNECT/DISCONNECT, ``2\\0`` plus 4 zero bytes for SEND, ``2\\0``
    otherwise. The verdict is the same whatever the segmentation. Reaching EOF with no verdict is a
    failure.
classic-client
    `ClientConnection` after a SEND, CONNECTEDUSERS or REGISTER, and `PushReader`. Either gives the
    reply or push of the right type with values in range, or raises the classic
    `RemoteProtocolError`. Reaching EOF with no verdict is a failure.
session-server, session-client
    `Connection(Role.SERVER)` or `Connection(Role.CLIENT)` is fed a byte stream and then EOF. The
    stream comes framed in any segmentation, or unframed as one WebSocket payload per message.
    `next_event()` returns only:
    - frames of the role's union (`ClientFrame` at a server, `ServerFrame` at a client). The first
      is a Hello of a version from OLDEST_VERSION on (a newer client is answered in VERSION), a
      Welcome of a version this side speaks, or an Error at a client. No Hello or Welcome comes after
      that. Each frame re-encodes to the same bytes.
    - `CLOSED_EVENT`, once, at EOF.
    - or it raises the session `RemoteProtocolError` with BAD_FRAME, FRAME_TOO_LARGE or
      UNSUPPORTED_VERSION. The codec is then CLOSED, returns nothing more, and still encodes the
      Error frame the server sends.
    A framed stream gives the same verdict whatever its segmentation.
soap
    - `normalise_text(str)` returns the same words with single spaces between them and nothing at
      either end.
    - The WSGI application, exactly as `make_server` serves it, gets any body and headers. It never
      raises, it calls start_response once, and its Content-Length is right.
    - POST is answered with 200 and a `modify_textResult` that is already normalised. Otherwise it
      gets a SOAP Fault (HTTP 500, or 400 for a SOAP 1.2 Sender) whose code blames the client:
      Client/Sender, VersionMismatch, MustUnderstand or DataEncodingUnknown. A Server/Receiver
      fault, or an error soapbar logs, means soapbar caught an exception it did not expect. That
      is a failure.
    - With Accept: application/json the answer is the same, as JSON.
    - GET ?wsdl is answered with the WSDL, or 404 for an unknown ?wsdl=name. Anything else gets 405.

Each atheris input begins with one control byte, which picks the segmentation, limits and headers
(see each target). The rest is the data fed to the target. To run one target in this process, with
libFuzzer's options (it never returns):

    python -m dmds.bench.fuzz session-server -runs=200000 -seed=1 [CORPUS_DIR | CRASH_FILE ...]

`run_fuzz` runs every target that way in its own subprocess, one after the other, and counts.

The codecs and the normaliser are imported inside the functions that use them, never at the top:
atheris instruments a module for coverage only if it is first imported inside
`instrument_imports()`, and `python -m dmds.bench.fuzz` imports this package before that.
"""

from __future__ import annotations

from dmds.bench.fuzz.classic import classic_client_oracle, classic_server_oracle
from dmds.bench.fuzz.longform import run_fuzz
from dmds.bench.fuzz.rule import (
    CLASSIC_MAX_FIELD,
    CLASSIC_MAX_TEXT,
    SELF_CHECK,
    SESSION_SMALL_FRAME,
    TARGETS,
    RuleBroken,
)
from dmds.bench.fuzz.seeds import seed_corpus
from dmds.bench.fuzz.session import session_oracle
from dmds.bench.fuzz.soap import SoapAnswer, SoapOracle

__all__ = [
    "CLASSIC_MAX_FIELD",
    "CLASSIC_MAX_TEXT",
    "SELF_CHECK",
    "SESSION_SMALL_FRAME",
    "TARGETS",
    "RuleBroken",
    "SoapAnswer",
    "SoapOracle",
    "classic_client_oracle",
    "classic_server_oracle",
    "run_fuzz",
    "seed_corpus",
    "session_oracle",
]
