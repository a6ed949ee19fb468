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
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
from lxml import etree

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from dmds.protocols.classic.events import Request

__all__ = [
    "TARGETS",
    "RuleBroken",
    "SoapAnswer",
    "SoapOracle",
    "classic_client_oracle",
    "classic_server_oracle",
    "main",
    "run_fuzz",
    "seed_corpus",
    "session_oracle",
]

# The codecs and the normaliser are imported inside the oracle factories, not at the top. atheris
# instruments a module for coverage only if the module is first imported inside
# `instrument_imports()`, and `python -m dmds.bench.fuzz` runs this file before that context opens.

#: The targets `run_fuzz` runs by default, in order.
TARGETS: Final = ("classic-server", "classic-client", "session-server", "session-client", "soap")
#: Not run by default: a target broken on purpose, so a test can prove that crashes get reported.
SELF_CHECK: Final = "self-check"

# Small limits by default let the fuzzer reach the limit checks with short inputs.
CLASSIC_MAX_FIELD: Final = 32
CLASSIC_MAX_TEXT: Final = 64
# Just above the Welcome the client oracle starts with (144 bytes).
SESSION_SMALL_FRAME: Final = 160

_MAX_LEN: Final = {
    "classic-server": 2048,
    "classic-client": 2048,
    # Deep MessagePack nesting needs room: a nested array costs one byte per level.
    "session-server": 16384,
    "session-client": 16384,
    "soap": 16384,
    SELF_CHECK: 64,
}


class RuleBroken(AssertionError):
    """A target did something the rule does not allow. The fuzzer counts it as a crash."""


def _pieces(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes. A size of 0 means one piece."""
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- classic -------------------------------------------------------------------------------------------


def classic_server_oracle(
    max_field_bytes: int = CLASSIC_MAX_FIELD, max_text_bytes: int = CLASSIC_MAX_TEXT
) -> Callable[[Sequence[bytes]], object]:
    """A checker of `ServerConnection`. It takes the pieces of one connection's input (EOF
    follows), and returns the verdict: the `Request`, or ``("error", op)``."""
    from dmds.protocols.classic import codec, codes, events  # noqa: PLC0415 - see the top

    def other_error(op: type[Request] | None) -> bytes:
        if op in (events.Connect, events.Disconnect):
            return b"3\0"
        return b"2\0\0\0\0\0" if op is events.Send else b"2\0"

    def check_request(request: Request, data: bytes) -> None:
        cls = type(request)
        if cls not in events.REQUESTS:
            raise RuleBroken(f"not a request: {request!r}")
        for f in dataclasses.fields(request):
            value = getattr(request, f.name)
            if cls is events.Connect and f.name == "listen_port":
                if type(value) is not int or not 1 <= value <= 65535:
                    raise RuleBroken(f"port out of range: {request!r}")
                continue
            limit = max_text_bytes if cls is events.Send and f.name == "text" else max_field_bytes
            if type(value) is not str or "\0" in value or len(value.encode()) > limit:
                raise RuleBroken(f"field {f.name} breaks its limit: {request!r}")
        if cls is events.Connect:
            assert isinstance(request, events.Connect)
            head = b"CONNECT\0" + request.alias.encode() + b"\0"
        else:
            # Lossless: the texts are the UTF-8 they came as.
            head = codec.encode_request(request)
        if not data.startswith(head):
            raise RuleBroken(f"{request!r} does not re-encode to its bytes {data[: len(head)]!r}")

    def verdict(pieces: Sequence[bytes]) -> object:
        conn = codec.ServerConnection(max_field_bytes, max_text_bytes)
        event: Request | None = None
        try:
            for piece in pieces:
                if piece:  # b"" would be EOF
                    conn.receive_data(piece)
                    event = conn.next_event()
                    if event is not None:
                        break
            else:
                conn.receive_data(b"")
                event = conn.next_event()
        except codec.RemoteProtocolError as exc:
            if exc.op is not conn.op or (exc.op is not None and exc.op not in events.REQUESTS):
                raise RuleBroken(f"error about {exc.op!r}, codec says {conn.op!r}") from exc
            reply = conn.send(codes.error_reply(exc.op, exc))
            if reply != other_error(exc.op):
                raise RuleBroken(f"error reply {reply!r} for {exc.op!r}") from exc
            return ("error", exc.op)
        if event is None:
            raise RuleBroken("no request and no error after EOF")
        check_request(event, b"".join(pieces))
        if conn.next_event() is not None:
            raise RuleBroken("a second request on one connection")
        return event

    return verdict


def classic_client_oracle(
    max_field_bytes: int = CLASSIC_MAX_FIELD, max_text_bytes: int = CLASSIC_MAX_TEXT
) -> tuple[Callable[[int, Sequence[bytes]], object], Callable[[Sequence[bytes]], object]]:
    """Checkers of `ClientConnection` and `PushReader`. The first takes the kind of request
    (0 SEND, 1 CONNECTEDUSERS, 2 REGISTER) and the pieces of the reply. The second takes the
    pieces of a push."""
    from dmds.protocols.classic import codec, events  # noqa: PLC0415 - see the top

    requests: tuple[tuple[events.Request, type[events.Reply]], ...] = (
        (events.Send("a", "b", "c"), events.SendReply),
        (events.ConnectedUsers("a"), events.ConnectedUsersReply),
        (events.Register("A B", "a", "01/02/2000"), events.Reply),
    )

    def feed(conn: codec.ClientConnection | codec.PushReader, pieces: Sequence[bytes]) -> object:
        event: object = None
        for piece in pieces:
            if piece:
                conn.receive_data(piece)
                event = conn.next_event()
                if event is not None:
                    return event
        conn.receive_data(b"")
        return conn.next_event()

    def reply_verdict(kind: int, pieces: Sequence[bytes]) -> object:
        request, reply_type = requests[kind % len(requests)]
        conn = codec.ClientConnection(max_field_bytes)
        conn.send(request)
        try:
            reply = feed(conn, pieces)
        except codec.RemoteProtocolError as exc:
            if exc.op is not type(request):
                raise RuleBroken(f"reply error about {exc.op!r}, not {type(request)!r}") from exc
            return ("error", exc.op)
        if type(reply) is not reply_type:
            raise RuleBroken(f"{reply!r} answers {request!r}, or no verdict after EOF")
        assert isinstance(reply, events.Reply)
        if not 0 <= reply.code <= 255:
            raise RuleBroken(f"code out of range: {reply!r}")
        if isinstance(reply, events.SendReply) and not 0 <= reply.message_id < 2**32:
            raise RuleBroken(f"id out of range: {reply!r}")
        if isinstance(reply, events.ConnectedUsersReply) and any(
            "\0" in a or len(a.encode()) > max_field_bytes for a in reply.aliases
        ):
            raise RuleBroken(f"alias breaks its limit: {reply!r}")
        return reply

    def push_verdict(pieces: Sequence[bytes]) -> object:
        reader = codec.PushReader(max_field_bytes, max_text_bytes)
        try:
            push = feed(reader, pieces)
        except codec.RemoteProtocolError as exc:
            if exc.op is not None:
                raise RuleBroken(f"push error about a request: {exc.op!r}") from exc
            return ("error", None)
        if isinstance(push, events.MessagePush):
            if (
                len(push.sender.encode()) > max_field_bytes
                or len(push.text.encode()) > max_text_bytes
                or not 0 <= push.message_id < 2**32
            ):
                raise RuleBroken(f"push breaks its limits: {push!r}")
        elif isinstance(push, events.ReceiptPush):
            if not 0 <= push.message_id < 2**32:
                raise RuleBroken(f"id out of range: {push!r}")
        else:
            raise RuleBroken(f"not a push, or no verdict after EOF: {push!r}")
        return push

    return reply_verdict, push_verdict


# -- session -------------------------------------------------------------------------------------------


def _payloads(data: bytes) -> list[bytes]:
    """`data` cut into WebSocket messages at its 4-byte length prefixes, so a framed stream also
    works unframed. Empty messages are left out: to the codec, b"" means EOF."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        payload = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if payload:
            out.append(payload)
    return out


def session_oracle(role: str) -> Callable[..., list[object]]:
    """A checker of `Connection` in `role` ("server" or "client").

    ``verdict(data, *, chunk=0, framed=True, handshake=True, max_frame_bytes=1 << 20)`` feeds the
    data and then EOF. With `handshake`, a valid Hello (server) or Welcome (client) comes first.
    It returns the events, ending with CLOSED_EVENT or ``("error", code)``."""
    from dmds.protocols.session import connection, frames  # noqa: PLC0415 - see the top
    from dmds.protocols.session.codes import ErrorCode  # noqa: PLC0415 - see the top

    is_server = role == "server"
    if role not in ("server", "client"):
        raise ValueError(f"role is server or client, not {role!r}")
    me = connection.Role.SERVER if is_server else connection.Role.CLIENT
    accepted: tuple[type[Any], ...] = typing.get_args(frames.ClientFrame if is_server else frames.ServerFrame)
    first: type[Any] = frames.Hello if is_server else frames.Welcome
    allowed = {ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNSUPPORTED_VERSION}
    decoder = msgspec.msgpack.Decoder(frames.ClientFrame if is_server else frames.ServerFrame)
    greeting: frames.Frame = (
        frames.Hello(version=frames.VERSION, client="fuzz")
        if is_server
        else frames.Welcome(
            version=frames.VERSION,
            server="dmds",
            heartbeat_s=30.0,
            idle_timeout_s=90.0,
            max_frame_bytes=1 << 20,
            max_text_bytes=65536,
            max_attachment_bytes=10 << 20,
        )
    )
    preamble = msgspec.msgpack.encode(greeting)

    def check_frame(frame: object, opened: bool) -> None:
        if type(frame) not in accepted:
            raise RuleBroken(f"{role} codec returned {frame!r}, not a frame it accepts")
        if not opened:
            if isinstance(frame, first):
                newest = float("inf") if is_server else frames.VERSION
                if not frames.OLDEST_VERSION <= frame.version <= newest:
                    raise RuleBroken(f"handshake of another version accepted: {frame!r}")
            elif is_server or not isinstance(frame, frames.Error):
                raise RuleBroken(f"{frame!r} before the handshake")
        elif isinstance(frame, frames.Hello | frames.Welcome):
            raise RuleBroken(f"handshake repeated: {frame!r}")
        encoded = msgspec.msgpack.encode(frame)
        if msgspec.msgpack.encode(decoder.decode(encoded)) != encoded:
            raise RuleBroken(f"{frame!r} does not re-encode")

    def verdict(
        data: bytes,
        *,
        chunk: int = 0,
        framed: bool = True,
        handshake: bool = True,
        max_frame_bytes: int = 1 << 20,
    ) -> list[object]:
        conn = connection.Connection(me, max_frame_bytes=max_frame_bytes, framed=framed)
        if framed:
            head = len(preamble).to_bytes(4, "big") + preamble if handshake else b""
            pieces = _pieces(head + data, chunk)
        else:
            pieces = ([preamble] if handshake else []) + _payloads(data)
        out: list[object] = []
        opened = False

        def drain() -> None:
            nonlocal opened
            while (event := conn.next_event()) is not None:
                if out and out[-1] is connection.CLOSED_EVENT:
                    raise RuleBroken(f"{event!r} after CLOSED_EVENT")
                if event is not connection.CLOSED_EVENT:
                    check_frame(event, opened)
                    opened = opened or isinstance(event, first)
                out.append(event)

        try:
            for piece in pieces:
                if piece:
                    conn.receive_data(piece, 0.0)
                    drain()
            conn.receive_data(b"", 0.0)
            drain()
        except connection.RemoteProtocolError as exc:
            if type(exc.code) is not ErrorCode or exc.code not in allowed:
                raise RuleBroken(f"protocol error with code {exc.code!r}") from exc
            if conn.state is not connection.State.CLOSED or conn.next_event() is not None:
                raise RuleBroken("codec not CLOSED after a protocol error") from exc
            # What the server sends before closing, and the client's codec can encode it too.
            if not conn.send(frames.Error(code=exc.code, message=exc.message), 0.0):
                raise RuleBroken("empty Error frame") from exc
            out.append(("error", exc.code))
            return out
        if not out or out[-1] is not connection.CLOSED_EVENT or conn.state is not connection.State.CLOSED:
            raise RuleBroken(f"EOF did not close the codec: {out[-3:]!r}")
        return out

    return verdict


# -- soap ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoapAnswer:
    """What the normaliser's WSGI application answered, checked against the rule."""

    status: int
    content_type: str
    body: bytes
    #: the modify_textResult of a 200 answer to POST
    result: str | None = None
    #: the fault code (local part: Client, Sender...) of a fault
    fault: str | None = None


_CLIENT_FAULTS: Final = frozenset(
    {"Client", "Sender", "VersionMismatch", "MustUnderstand", "DataEncodingUnknown"}
)
# The answers are the server's own, but parse them like untrusted input all the same.
_ANSWER_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


class SoapOracle:
    """Checks `normalise_text` and the WSGI application the normaliser service serves."""

    def __init__(self) -> None:
        from dmds.soap import service  # noqa: PLC0415 - see the top

        self._normalise: Callable[[str], str] = service.normalise_text
        # The app exactly as make_server serves it, with the wrapper for a missing Content-Length.
        self._app: WSGIApplication = service._empty_body_without_length(service.build_app())
        self._errors = _ErrorRecords()
        # soapbar logs an exception it catches at ERROR; under the rule that is a crash.
        logging.getLogger("soapbar").addHandler(self._errors)

    def close(self) -> None:
        logging.getLogger("soapbar").removeHandler(self._errors)

    def text(self, text: str) -> str:
        out = self._normalise(text)
        if type(out) is not str or out.split() != text.split():
            raise RuleBroken(f"normalise_text({text!r}) = {out!r} changed the words")
        if out != out.strip() or "  " in out or any(ch.isspace() and ch != " " for ch in out):
            raise RuleBroken(f"normalise_text({text!r}) = {out!r} is not normalised")
        return out

    def request(
        self,
        body: bytes,
        *,
        method: str = "POST",
        content_type: str | None = "text/xml; charset=utf-8",
        soap_action: str | None = '"modify_text"',
        accept: str = "",
        query: str = "",
        content_length: bool = True,
    ) -> SoapAnswer:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "5000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        if content_length:
            environ["CONTENT_LENGTH"] = str(len(body))
        if soap_action is not None:
            environ["HTTP_SOAPACTION"] = soap_action
        if accept:
            environ["HTTP_ACCEPT"] = accept
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            started.append((status, headers))
            return lambda _data: None

        self._errors.records.clear()
        chunks = self._app(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if self._errors.records:
            record = self._errors.records[0]
            raise RuleBroken(f"soapbar logged an error: {record.getMessage()} {record.exc_text or ''}")
        if len(started) != 1:
            raise RuleBroken(f"start_response called {len(started)} times")
        status_line, headers = started[0]
        fields = {name.lower(): value for name, value in headers}
        if fields.get("content-length") != str(len(out)):
            raise RuleBroken(f"Content-Length {fields.get('content-length')} for {len(out)} bytes")
        status = int(status_line.split()[0])
        answer = SoapAnswer(status, fields.get("content-type", ""), out)
        if method == "POST":
            return self._check_post(answer)
        if method == "GET" and "wsdl" in query.lower():
            if status == 404 or (status == 200 and b"definitions" in out[:400]):
                return answer
            raise RuleBroken(f"GET ?{query[:40]!r} answered {status_line}: {out[:200]!r}")
        if status != 405:
            raise RuleBroken(f"{method[:20]!r} answered {status_line}")
        return answer

    def _check_post(self, answer: SoapAnswer) -> SoapAnswer:
        status, body = answer.status, answer.body
        if answer.content_type.startswith("application/json"):
            document = json.loads(body)
            if status == 200 and isinstance(document, dict) and "modify_textResult" in document:
                result = document["modify_textResult"]
                fault = None
            elif status in (400, 500) and isinstance(document, dict) and "fault" in document:
                result, fault = None, str(document["fault"].get("code"))
            else:
                raise RuleBroken(f"JSON answer {status}: {body[:200]!r}")
        else:
            root = etree.fromstring(body, _ANSWER_PARSER)
            body_element = next((e for e in root if _local(e.tag) == "Body"), None)
            first = body_element[0] if body_element is not None and len(body_element) else None
            if status == 200 and first is not None and _local(first.tag) == "modify_textResponse":
                found = next((e for e in first.iter() if _local(e.tag) == "modify_textResult"), None)
                if found is None:
                    raise RuleBroken(f"200 without modify_textResult: {body[:300]!r}")
                result, fault = found.text or "", None
            elif status in (400, 500) and first is not None and _local(first.tag) == "Fault":
                # SOAP 1.1: <faultcode>; SOAP 1.2: <Code><Value>.
                code = next((e for e in first.iter() if _local(e.tag) in ("faultcode", "Value")), None)
                result, fault = None, ((code.text or "") if code is not None else "").rpartition(":")[2]
            else:
                raise RuleBroken(f"answer {status}: {body[:300]!r}")
        if fault is not None:
            if fault not in _CLIENT_FAULTS:
                raise RuleBroken(f"{fault} fault: the server failed, {body[:300]!r}")
            return dataclasses.replace(answer, fault=fault)
        if not isinstance(result, str) or self._normalise(result) != result:
            raise RuleBroken(f"result {result!r} is not normalised text")
        return dataclasses.replace(answer, result=result)


# -- atheris targets -----------------------------------------------------------------------------------

_CONTENT_TYPES: Final = (
    "text/xml; charset=utf-8",
    "application/soap+xml; charset=utf-8",
    'multipart/related; type="application/xop+xml"; boundary="b"; start-info="text/xml"',
    "",
)
_SOAP_ACTIONS: Final = ('"modify_text"', "", '"nope"', "modify_text")


def _target(name: str) -> Callable[[bytes], None]:
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
            if verdict(_pieces(body, (ctrl & 7) + 1)) != whole:
                raise RuleBroken("the verdict depends on the segmentation")

        return classic_server
    if name == "classic-client":
        reply_verdict, push_verdict = classic_client_oracle()

        def classic_client(data: bytes) -> None:
            # Control byte: bits 0-1, the request (SEND, CONNECTEDUSERS, REGISTER); bits 2-4, piece size.
            if not data:
                return
            ctrl, body = data[0], data[1:]
            pieces = _pieces(body, (ctrl >> 2) & 7)
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


# -- seed corpora and dictionaries ---------------------------------------------------------------------


def _soap_envelope(text: str, *, soap12: bool = False, header: str = "", doctype: str = "") -> bytes:
    ns = "http://www.w3.org/2003/05/soap-envelope" if soap12 else "http://schemas.xmlsoap.org/soap/envelope/"
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}<soap:Envelope xmlns:soap="{ns}" '
        f'xmlns:tns="http://tests.python-zeep.org/"><soap:Header>{header}</soap:Header><soap:Body>'
        f"<tns:modify_text><tns:text>{text}</tns:text></tns:modify_text></soap:Body></soap:Envelope>"
    ).encode()


def seed_corpus(target: str) -> list[bytes]:
    """Valid inputs of `target`, with their control byte, for the fuzzer to mutate."""
    if target in ("classic-server", "classic-client"):
        from dmds.protocols.classic import codec, events  # noqa: PLC0415 - see the top

        if target == "classic-server":
            requests: list[events.Request] = [
                events.Register("Juan Perez", "juan123", "01/02/2000"),
                events.Unregister("juan123"),
                events.Connect("juan123", 40001),
                events.Disconnect("juan123"),
                events.Send("juan123", "maria123", "Hola soy Juan"),
                events.Send("j", "m", "ñandú ☃ \U0001f600"),
                events.ConnectedUsers("juan123"),
            ]
            encoded = [codec.encode_request(r) for r in requests]
            return [bytes([ctrl]) + e for e in encoded for ctrl in (0, 3, 0x80)] + [b"\0" + encoded[0][:12]]
        replies = [
            (0, b"0\0\0\0\0\x07"),
            (0, b"2\0\0\0\0\0"),
            (1, b"0\0" + b"2\0juan123\0maria123\0"),
            (1, b"1\0"),
            (2, b"0\0"),
            (2, b"SEND_MESSAGE\0juan123\x007\0Hola soy Juan\0"),
            (2, b"SEND_MESS_ACK\x007\0"),
        ]
        return [bytes([kind | piece << 2]) + r for kind, r in replies for piece in (0, 1)]
    if target in ("session-server", "session-client"):
        from dmds.protocols.session import frames as f  # noqa: PLC0415 - see the top
        from dmds.protocols.session.codes import ErrorCode  # noqa: PLC0415 - see the top

        sequence: list[f.Frame]
        if target == "session-server":
            sequence = [
                f.Login(id=1, alias="juan", password="secret password"),  # noqa: S106 - seed data
                f.Send(id=2, to="maria", key="k1", text="Hola, soy Juan"),
                f.Ack(message_ids=[1, 2]),
                f.MarkRead(message_ids=[1]),
                f.Ping(n=3),
                f.History(id=3, peer="maria", before=1.5, limit=10),
                f.UploadStart(id=4, name="a.txt", media_type="text/plain", size=3),
                f.UploadChunk(id=5, upload=1, offset=0, data=b"abc"),
                f.Fetch(id=6, attachment=1),
                f.Register(id=7, alias="x", full_name="X", birth_date="01/01/2000", password="12345678"),  # noqa: S106
            ]
            hello: f.Frame = f.Hello(version=1, client="fuzz")
        else:
            attachment = f.Attachment(attachment_id=1, name="a.txt", media_type="text/plain", size=3)
            sequence = [
                f.LoggedIn(re=1, alias="juan", token="t" * 43, expires_at=1.8e9),
                f.Accepted(re=2, to="maria", key="k1", message_id=1),
                f.Message(sender="maria", message_id=1, text="hola", sent_at=1.7e9, attachment=attachment),
                f.Delivered(to="maria", message_id=1, key="k1"),
                f.Error(code=ErrorCode.NOT_LOGGED_IN, message="log in", re=3),
                f.HistoryPage(
                    re=4,
                    entries=[f.HistoryEntry(sender="a", recipient="b", message_id=1, text="t", sent_at=1.0)],
                    more=False,
                ),
                f.Chunk(re=5, attachment=1, offset=0, data=b"abc", size=3),
                f.PresenceChanged(alias="maria", online=True),
            ]
            hello = f.Welcome(
                version=1,
                server="dmds",
                heartbeat_s=30.0,
                idle_timeout_s=90.0,
                max_frame_bytes=1 << 20,
                max_text_bytes=65536,
                max_attachment_bytes=10 << 20,
            )

        def framed(items: Sequence[f.Frame]) -> bytes:
            out = b""
            for item in items:
                payload = msgspec.msgpack.encode(item)
                out += len(payload).to_bytes(4, "big") + payload
            return out

        whole = framed(sequence)
        seeds = [bytes([ctrl]) + whole for ctrl in (0, 2, 8, 0x18)]
        seeds += [b"\1" + framed([hello, *sequence[:2]]), b"\0" + framed([sequence[0]])]
        return seeds + [b"\0" + framed([item]) for item in sequence]
    if target == "soap":
        laughs = '<!DOCTYPE e [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;">]>'
        external = '<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        wsa = (
            '<wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:1</wsa:MessageID>'
            '<wsa:ReplyTo xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>http://x/'
            "</wsa:Address></wsa:ReplyTo>"
        )
        must = '<h:x xmlns:h="urn:h" soap:mustUnderstand="1">1</h:x>'
        return [
            b"\0" + _soap_envelope("  Hola ,   soy\tJuan  "),
            b"\1" + _soap_envelope("a  b", soap12=True),
            b"\x10" + _soap_envelope("a  b"),
            b"\x80" + _soap_envelope("a"),
            b"\0" + _soap_envelope("&c;", doctype=laughs),
            b"\0" + _soap_envelope("&x;", doctype=external),
            b"\0" + _soap_envelope("x", header=wsa),
            b"\1" + _soap_envelope("x", soap12=True, header=must),
            b"\0" + _soap_envelope("<![CDATA[ a <b> ]]>&#x20;&amp;"),
            b"\x40wsdl",
        ]
    if target == SELF_CHECK:
        return [b"bu"]
    raise ValueError(f"unknown target {target!r}")


def _dictionary(target: str) -> list[bytes]:
    """Tokens that libFuzzer splices into inputs: the grammar's words."""
    if target.startswith("classic"):
        return [
            b"\0",
            *(b"REGISTER", b"UNREGISTER", b"CONNECT", b"DISCONNECT", b"SEND", b"CONNECTEDUSERS"),
            *(b"SEND_MESSAGE", b"SEND_MESS_ACK", b"65535", b"4294967295", b"\xc3\xb1"),
        ]
    if target.startswith("session"):
        from dmds.protocols.session import frames  # noqa: PLC0415 - see the top

        words = {"t", "id", "re", "version", "message_ids", "text", "data", "entries", "attachment"}
        for union in (frames.ClientFrame, frames.ServerFrame):
            for cls in typing.get_args(union):
                words.add(cls.__struct_config__.tag)
                words.update(cls.__struct_fields__)
        tokens = [msgspec.msgpack.encode(w) for w in sorted(words)]
        return [
            *tokens,
            b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\xd3\x80\0\0\0\0\0\0\0",
            b"\xdd\xff\xff\xff\xff",
        ]
    if target == "soap":
        return [
            b"<soap:Envelope",
            b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"',
            b"http://www.w3.org/2003/05/soap-envelope",
            b"http://tests.python-zeep.org/",
            b"http://www.w3.org/2005/08/addressing",
            b"<soap:Body>",
            b"<soap:Header>",
            b"modify_text",
            b"<tns:text>",
            b'mustUnderstand="1"',
            b"<!DOCTYPE",
            b"<!ENTITY",
            b"SYSTEM",
            b"<![CDATA[",
            b"&#x",
            b'encoding="',
        ]
    return [b"g"]


def _dict_line(index: int, token: bytes) -> str:
    escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)
    return f'kw{index}="{escaped}"\n'


def _write_inputs(target: str, directory: Path) -> tuple[Path, Path]:
    """Write the seed corpus and the dictionary of `target` under `directory`."""
    corpus = directory / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seed_corpus(target)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    tokens = directory / "tokens.dict"
    tokens.write_text("".join(_dict_line(i, t) for i, t in enumerate(_dictionary(target))))
    return corpus, tokens


# -- the long form -------------------------------------------------------------------------------------

_CRASH_PREFIXES: Final = ("crash-", "timeout-", "oom-", "leak-")


def _last_int(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def _run_target(
    target: str, runs: int, seed: int, directory: Path, timeout_s: float | None
) -> dict[str, Any]:
    corpus, tokens = _write_inputs(target, directory)
    artifacts = directory / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log = directory / "fuzz.log"
    command = [
        sys.executable,
        "-m",
        "dmds.bench.fuzz",
        target,
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={_MAX_LEN[target]}",
        f"-dict={tokens}",
        f"-artifact_prefix={artifacts}{os.sep}",
        "-timeout=60",  # a single input running this long is a hang: reported as timeout-*
        "-print_final_stats=1",
        str(corpus),
    ]
    env = dict(os.environ)
    # The child imports this package: make it importable even when it is not installed.
    source = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    exit_code: int | None
    with log.open("w") as out:
        try:
            exit_code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            exit_code = None
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    crash_files = sorted(str(p) for p in artifacts.iterdir() if p.name.startswith(_CRASH_PREFIXES))
    # A child that died without writing an input (failed import, killed, out of time) still counts:
    # nothing may be swallowed.
    crashes = len(crash_files) or int(exit_code != 0)
    return {
        # The final stats, or else the last status line ("#123  NEW cov: ...") of a run cut short.
        "inputs": _last_int(r"stat::number_of_executed_units:\s*(\d+)", text)
        or _last_int(r"(?m)^#(\d+)\s", text)
        or 0,
        "crashes": crashes,
        "crash_files": crash_files,
        "seconds": round(seconds, 2),
        "coverage": _last_int(r"\bcov: (\d+)", text),
        "features": _last_int(r"\bft: (\d+)", text),
        "corpus_units": _last_int(r"\bcorp: (\d+)/", text),
        "exit_code": exit_code,
        "log": str(log),
    }


def run_fuzz(
    runs: int,
    seed: int,
    *,
    targets: Sequence[str] = TARGETS,
    workdir: Path | None = None,
    timeout_s: float | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fuzz each target for `runs` inputs from `seed`, one subprocess after another, and count.

    Returns ``{"runs", "seed", "inputs", "crashes", "seconds", "workdir", "targets": {name: {...}}}``.
    Each target's dict holds inputs as atheris counts them, crashes with the paths of their inputs
    (replay one with ``python -m dmds.bench.fuzz TARGET FILE``), seconds, the coverage and feature
    counts libFuzzer printed last, the exit code and the log. Without `workdir` a temporary one is
    used, and removed only if no target crashed. `progress` is called after each target."""
    unknown = [t for t in targets if t not in _MAX_LEN]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; the targets: {', '.join((*TARGETS, SELF_CHECK))}")
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="dmds-fuzz-"))
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for target in targets:
        results[target] = _run_target(target, runs, seed, root / target, timeout_s)
        if progress is not None:
            progress(target, results[target])
    crashes = sum(r["crashes"] for r in results.values())
    keep = workdir is not None or crashes > 0
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "runs": runs,
        "seed": seed,
        "inputs": sum(r["inputs"] for r in results.values()),
        "crashes": crashes,
        "seconds": round(time.monotonic() - started, 2),
        "workdir": str(root) if keep else None,
        "targets": results,
    }


def _fuzz(target: str, options: list[str]) -> None:
    """Fuzz `target` in this process with libFuzzer's `options`. atheris.Fuzz() exits the process."""
    import atheris  # noqa: PLC0415 - only the fuzzing child needs libFuzzer

    if target not in _MAX_LEN:
        raise ValueError(f"unknown target {target!r}")
    with atheris.instrument_imports(include=["dmds.protocols", "dmds.soap", "dmds.errors", "soapbar"]):
        test_one_input = _target(target)
    if target == SELF_CHECK:
        # Its bug is in this module, which is not instrumented: give the fuzzer coverage to climb.
        test_one_input = atheris.instrument_func(test_one_input)
    if not any(not o.startswith("-") for o in options):
        # No corpus named: start from the seeds, in a directory left behind with what was found.
        directory = Path(tempfile.mkdtemp(prefix=f"dmds-fuzz-{target}-"))
        corpus, tokens = _write_inputs(target, directory)
        extra = [] if any(o.startswith("-dict=") for o in options) else [f"-dict={tokens}"]
        options = [*options, *extra, str(corpus)]
        print(f"dmds fuzz: corpus in {corpus}", file=sys.stderr)
    if not any(o.startswith("-max_len=") for o in options):
        options = [f"-max_len={_MAX_LEN[target]}", *options]
    atheris.Setup([sys.argv[0], *options], test_one_input)
    atheris.Fuzz()


def _option(options: Sequence[str], name: str, default: int) -> int:
    for option in options:
        if option.startswith(f"-{name}="):
            return int(option.partition("=")[2])
    return default


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmds.bench.fuzz",
        description="Fuzz the dmds codecs and the SOAP normaliser with atheris (libFuzzer).",
        epilog=(
            "examples:\n"
            "  python -m dmds.bench.fuzz session-server -runs=200000 -seed=1\n"
            "  python -m dmds.bench.fuzz soap -max_total_time=60 CORPUS_DIR\n"
            "  python -m dmds.bench.fuzz classic-server crash-1234abcd   (replay a crash)\n"
            "  python -m dmds.bench.fuzz all -runs=200000 -seed=1   (every target, in subprocesses; JSON)\n"
            "\nThe allowed outcomes per target are in this module's docstring: pydoc dmds.bench.fuzz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=[*TARGETS, SELF_CHECK, "all"], help="what to fuzz")
    parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="libFuzzer options (-runs=N, -seed=S, -max_total_time=S, -help=1...), then corpus "
        "directories or inputs to replay; without a corpus the seeds are written to a temporary one",
    )
    args = parser.parse_args(argv)
    if args.target == "all":
        result = run_fuzz(_option(args.options, "runs", 200000), _option(args.options, "seed", 1))
        print(json.dumps(result, indent=2))
        return 1 if result["crashes"] else 0
    _fuzz(args.target, list(args.options))
    return 0  # not reached: atheris.Fuzz() exits


if __name__ == "__main__":
    sys.exit(main())
