"""The classic codec: bytes to events and events to bytes, for both ends. Does no I/O.

Theory of operation
-------------------
A classic message is a sequence of fields, each UTF-8 text ended by one NUL byte, except the 4 raw
bytes of the message id after a SEND reply. The peer may deliver them in any segmentation, down to a
byte at a time, so every reader here buffers and hands out an event only once all of its fields have
arrived; ``next_event()`` returns None while more bytes are needed.

Limits are enforced while buffering: a partial field that has already passed its limit, or an
unfinished operation name longer than any known one, fails at once rather than after the peer has
sent all of it. EOF is signalled by ``receive_data(b"")`` (as in h11); EOF before the last field is
a missing field.

Peer mistakes raise `RemoteProtocolError`, which carries the request class when it was known (`op`),
so the caller can answer with that operation's "other error" code. Our own misuse raises
`LocalProtocolError`.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from dmds.protocols.classic.events import (
    PUSHES,
    REQUESTS,
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    MessagePush,
    Push,
    ReceiptPush,
    Reply,
    Request,
    Send,
    SendReply,
)

NUL: Final = b"\0"

#: Fields after the operation name, per request: the codec's grammar.
FIELDS: Final[dict[bytes, int]] = {
    b"REGISTER": 3,
    b"UNREGISTER": 1,
    b"CONNECT": 2,
    b"DISCONNECT": 1,
    b"SEND": 3,
    b"CONNECTEDUSERS": 1,
}
_REQUEST_BY_OP: Final = {cls.OP: cls for cls in REQUESTS}
_PUSH_BY_OP: Final = {cls.OP: cls for cls in PUSHES}
_PUSH_FIELDS: Final = {MessagePush.OP: 3, ReceiptPush.OP: 1}
_LONGEST_OP: Final = max(len(op) for op in FIELDS)
_LONGEST_PUSH_OP: Final = max(len(op) for op in _PUSH_FIELDS)
# Numbers on the wire: result codes, counts and ids. 10 digits holds any 32-bit id.
_MAX_NUMBER_BYTES: Final = 10
_MAX_ID: Final = 2**32 - 1


class RemoteProtocolError(Exception):
    """The peer sent bytes that break the protocol. `op` is the request class if it was known."""

    def __init__(self, reason: str, op: type[Request] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.op = op


class LocalProtocolError(Exception):
    """We misused the codec (our bug, not the peer's)."""


class _FieldBuffer:
    """Bytes received so far, handed out a field (or a fixed count of bytes) at a time."""

    __slots__ = ("_buf", "_eof", "_scanned")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        # Bytes of _buf already searched for a NUL: keeps byte-at-a-time input linear.
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        if self._eof and data:
            raise LocalProtocolError("data after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def field(self, limit: int, what: str) -> bytes | None:
        """Pop one NUL-terminated field of at most `limit` bytes; None if it has not all arrived."""
        end = self._buf.find(NUL, self._scanned, limit + 1)
        if end < 0:
            self._scanned = min(len(self._buf), limit + 1)
            if len(self._buf) > limit:
                raise ValueError(f"{what} longer than {limit} bytes")
            if self._eof:
                raise ValueError(f"connection closed before the end of {what}")
            return None
        value = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scanned = 0
        return value

    def whole_request(self, max_field: int, max_text: int) -> Request | None:
        """The fast path for the usual case, a whole well-formed request in the buffer: one split
        instead of a field at a time. None for anything else (the field-by-field path then handles
        it, errors included)."""
        parts = self._buf.split(NUL, 4)
        cls = _REQUEST_BY_OP.get(bytes(parts[0]))
        if cls is None:
            return None
        want = FIELDS[cls.OP]
        if len(parts) < want + 2:  # the last field's NUL has not arrived
            return None
        fields = [bytes(p) for p in parts[1 : want + 1]]
        if cls is Send:
            if len(fields[0]) > max_field or len(fields[1]) > max_field or len(fields[2]) > max_text:
                return None
        elif any(len(f) > max_field for f in fields):
            return None
        try:
            request = _build_request(cls, fields)
        except ValueError:
            return None
        del self._buf[: sum(len(f) + 1 for f in fields) + len(cls.OP) + 1]
        self._scanned = 0
        return request

    def raw(self, count: int, what: str) -> bytes | None:
        if len(self._buf) >= count:
            value = bytes(self._buf[:count])
            del self._buf[:count]
            self._scanned = 0
            return value
        if self._eof:
            raise ValueError(f"connection closed before the end of {what}")
        return None


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not valid UTF-8") from None


def _number(raw: bytes, what: str, maximum: int) -> int:
    # int() would accept " 7", "+7" and non-ASCII digits: the wire takes plain ASCII digits only.
    if not raw or not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_NUMBER_BYTES:
        raise ValueError(f"{what} is not a number: {raw[:20]!r}")
    value = int(raw)
    if value > maximum:
        raise ValueError(f"{what} out of range: {value}")
    return value


def _field(value: str) -> bytes:
    data = value.encode("utf-8")
    if NUL in data:
        raise LocalProtocolError("a field cannot contain NUL")
    return data + NUL


def _build_request(cls: type[Request], fields: list[bytes]) -> Request:
    if cls is Connect:
        port = _number(fields[1], "listen port", 65535)
        if port == 0:
            raise ValueError("listen port 0 is not a port")
        return Connect(_text(fields[0], "alias"), port)
    return cls(*(_text(f, "field") for f in fields))


class ServerConnection:
    """One classic request/reply exchange, server side. Does no I/O.

    Feed bytes with `receive_data` (b"" for EOF); `next_event` returns the request once complete,
    then None forever (the protocol has one request per connection). Bytes after the request are
    ignored.
    """

    __slots__ = ("_buf", "_fast_tried", "_fields", "_max_field", "_max_text", "_op", "_request")

    def __init__(self, max_field_bytes: int = 256, max_text_bytes: int = 65536) -> None:
        self._max_field = max_field_bytes
        self._max_text = max_text_bytes
        self._buf = _FieldBuffer()
        self._op: type[Request] | None = None
        self._fields: list[bytes] = []
        self._request: Request | None = None
        self._fast_tried = False

    @property
    def op(self) -> type[Request] | None:
        """The request class once its name has arrived (for a timeout's reply), else None."""
        return self._op

    @property
    def done(self) -> bool:
        return self._request is not None

    def receive_data(self, data: bytes) -> None:
        if self._request is not None:
            return  # classic.md: one request per connection; the rest is not ours to read
        self._buf.feed(data)

    def next_event(self) -> Request | None:
        if self._request is not None:
            return None
        try:
            return self._parse()
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), self._op) from None

    def _parse(self) -> Request | None:
        if self._op is None and not self._fast_tried:
            # Only once, on the first bytes: retried on every segment of a slow client it would
            # copy the buffer again each time.
            self._fast_tried = True
            whole = self._buf.whole_request(self._max_field, self._max_text)
            if whole is not None:
                self._op = type(whole)
                self._request = whole
                return whole
        if self._op is None:
            if self._buf.eof and self._buf.buffered == 0:
                raise ValueError("empty request")
            raw = self._buf.field(_LONGEST_OP, "operation name")
            if raw is None:
                return None
            op = _REQUEST_BY_OP.get(raw)
            if op is None:
                raise ValueError(f"unknown operation {raw[:20]!r}")
            self._op = op
        want = FIELDS[self._op.OP]
        while len(self._fields) < want:
            last_of_send = self._op is Send and len(self._fields) == want - 1
            limit = self._max_text if last_of_send else self._max_field
            raw = self._buf.field(limit, f"field {len(self._fields) + 1} of {self._op.OP.decode()}")
            if raw is None:
                return None
            self._fields.append(raw)
        self._request = _build_request(self._op, self._fields)
        return self._request

    def close(self) -> None:
        """Drop what is buffered: after an error reply the transport feeds nothing more (it lingers),
        and a field cut off at its limit need not be held meanwhile."""
        self._buf = _FieldBuffer()
        self._fields = []

    def send(self, reply: Reply) -> bytes:
        """The bytes of `reply`, checked against the request it answers when that is known."""
        if self._op is Send and not isinstance(reply, SendReply):
            raise LocalProtocolError("a SEND is answered with a SendReply")
        if self._op is ConnectedUsers and type(reply) is SendReply:
            raise LocalProtocolError("CONNECTEDUSERS is not answered with a SendReply")
        return encode_reply(reply)


def encode_reply(reply: Reply) -> bytes:
    out = b"%d\0" % reply.code
    if isinstance(reply, SendReply):
        # classic.md: every SEND reply carries the 4 id bytes, whatever the code.
        out += reply.message_id.to_bytes(4, "big") if reply.code == 0 else b"\0\0\0\0"
    elif isinstance(reply, ConnectedUsersReply) and reply.code == 0:
        out += b"%d\0" % len(reply.aliases) + b"".join(_field(a) for a in reply.aliases)
    return out


def encode_request(request: Request) -> bytes:
    values = (str(getattr(request, f.name)) for f in dataclasses.fields(request))
    return request.OP + NUL + b"".join(_field(v) for v in values)


def encode_push(push: Push) -> bytes:
    if isinstance(push, MessagePush):
        return b"%s\0%s%d\0%s" % (push.OP, _field(push.sender), push.message_id, _field(push.text))
    if isinstance(push, ReceiptPush):
        return b"%s\0%d\0" % (push.OP, push.message_id)
    raise LocalProtocolError(f"not a push: {push!r}")


class ClientConnection:
    """One classic request/reply exchange, client side. Does no I/O.

    `send(request)` gives the bytes to write; then feed the reply's bytes and call `next_event`
    until it returns the reply.
    """

    __slots__ = ("_aliases", "_buf", "_code", "_count", "_max_field", "_reply", "_request")

    def __init__(self, max_field_bytes: int = 256) -> None:
        self._max_field = max_field_bytes
        self._buf = _FieldBuffer()
        self._request: Request | None = None
        self._code: int | None = None
        self._count: int | None = None
        self._aliases: list[str] = []
        self._reply: Reply | None = None

    def send(self, request: Request) -> bytes:
        if self._request is not None:
            raise LocalProtocolError("one request per connection")
        self._request = request
        return encode_request(request)

    def receive_data(self, data: bytes) -> None:
        if self._reply is None:
            self._buf.feed(data)

    def next_event(self) -> Reply | None:
        if self._request is None:
            raise LocalProtocolError("no request sent")
        if self._reply is not None:
            return None
        try:
            reply = self._parse(self._request)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), type(self._request)) from None
        self._reply = reply
        return reply

    def _parse(self, request: Request) -> Reply | None:
        if self._code is None:
            raw = self._buf.field(_MAX_NUMBER_BYTES, "result code")
            if raw is None:
                return None
            self._code = _number(raw, "result code", 255)
        if isinstance(request, Send):
            id_bytes = self._buf.raw(4, "message id")
            if id_bytes is None:
                return None
            return SendReply(self._code, int.from_bytes(id_bytes, "big"))
        if not isinstance(request, ConnectedUsers) or self._code != 0:
            return (
                ConnectedUsersReply(self._code) if isinstance(request, ConnectedUsers) else Reply(self._code)
            )
        if self._count is None:
            raw = self._buf.field(_MAX_NUMBER_BYTES, "user count")
            if raw is None:
                return None
            self._count = _number(raw, "user count", _MAX_ID)
        while len(self._aliases) < self._count:
            raw = self._buf.field(self._max_field, "alias")
            if raw is None:
                return None
            self._aliases.append(_text(raw, "alias"))
        return ConnectedUsersReply(self._code, tuple(self._aliases))


class PushReader:
    """One push, as read by a client's listener from one server connection. Does no I/O."""

    __slots__ = ("_buf", "_fields", "_max_field", "_max_text", "_op", "_push")

    def __init__(self, max_field_bytes: int = 256, max_text_bytes: int = 65536) -> None:
        self._max_field = max_field_bytes
        self._max_text = max_text_bytes
        self._buf = _FieldBuffer()
        self._op: bytes | None = None
        self._fields: list[bytes] = []
        self._push: Push | None = None

    def receive_data(self, data: bytes) -> None:
        if self._push is None:
            self._buf.feed(data)

    def next_event(self) -> Push | None:
        if self._push is not None:
            return None
        try:
            push = self._parse()
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from None
        self._push = push
        return push

    def _parse(self) -> Push | None:
        if self._op is None:
            raw = self._buf.field(_LONGEST_PUSH_OP, "push name")
            if raw is None:
                return None
            if raw not in _PUSH_BY_OP:
                raise ValueError(f"unknown push {raw[:20]!r}")
            self._op = raw
        want = _PUSH_FIELDS[self._op]
        while len(self._fields) < want:
            index = len(self._fields)
            if self._op == ReceiptPush.OP or index == 1:
                limit = _MAX_NUMBER_BYTES
            else:
                limit = self._max_text if index == 2 else self._max_field
            raw = self._buf.field(limit, f"field {index + 1} of {self._op.decode()}")
            if raw is None:
                return None
            self._fields.append(raw)
        if self._op == ReceiptPush.OP:
            return ReceiptPush(_number(self._fields[0], "message id", _MAX_ID))
        sender, mid, text = self._fields
        return MessagePush(_text(sender, "sender"), _number(mid, "message id", _MAX_ID), _text(text, "text"))
