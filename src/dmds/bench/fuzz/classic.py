"""Oracles of the classic codec: `ServerConnection`, and `ClientConnection` with `PushReader`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmds.protocols.classic.events import Request

from dmds.bench.fuzz.rule import CLASSIC_MAX_FIELD, CLASSIC_MAX_TEXT, RuleBroken


def classic_server_oracle(
    max_field_bytes: int = CLASSIC_MAX_FIELD, max_text_bytes: int = CLASSIC_MAX_TEXT
) -> Callable[[Sequence[bytes]], object]:
    """A checker of `ServerConnection`. It takes the pieces of one connection's input (EOF
    follows), and returns the verdict: the `Request`, or ``("error", op)``."""
    from dmds.protocols.classic import codec, codes, events  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

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
    from dmds.protocols.classic import codec, events  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

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
