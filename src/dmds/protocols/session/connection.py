"""The session codec: bytes to frames and frames to bytes, for both ends. Does no I/O, reads no clock.

Theory of operation
-------------------
Over TCP each frame is a 4-byte big-endian payload length, then the payload: one MessagePack map
(`frames.py`). Over WebSocket each binary message is one payload and the length prefix is left out
(`framed=False`): WebSocket frames messages itself. Everything else is the same, so one codec serves
TCP, WebSocket and the client library.

The first frame from the client must be Hello with a version this code speaks; the server answers
Welcome. Any other frame first, a second Hello, a frame the role does not accept, an undecodable
payload, or a length above `max_frame_bytes` (refused as soon as the 4 prefix bytes arrive, before
the payload is buffered) raise `RemoteProtocolError` with the ErrorCode to send back in an Error
frame before closing. After that the connection is CLOSED and stays so.

Time is passed in (`now`, seconds on any monotonic clock). `get_timer()` says when `handle_timer()`
must next be called: a Ping is due when nothing was sent for `heartbeat_s`, and the peer is gone when
nothing was received for `idle_timeout_s`.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final

import msgspec

from dmds.protocols.session import frames
from dmds.protocols.session.codes import ErrorCode

_PREFIX: Final = struct.Struct(">I")


class Role(enum.Enum):
    CLIENT = enum.auto()
    SERVER = enum.auto()


class State(enum.Enum):
    #: waiting for Hello (server) or Welcome (client)
    HANDSHAKE = enum.auto()
    OPEN = enum.auto()
    CLOSED = enum.auto()


class RemoteProtocolError(Exception):
    """The peer broke the protocol. `code` is what to tell it in an Error frame before closing."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LocalProtocolError(Exception):
    """We misused the codec (our bug)."""


class ConnectionClosed:
    """Event: the peer closed the connection (EOF)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ConnectionClosed()"


CLOSED_EVENT: Final = ConnectionClosed()

_ENCODER: Final = msgspec.msgpack.Encoder()
#: A tuple, not `Hello | Welcome`: a union written in the check is built anew at every frame.
_HANDSHAKE_FRAMES: Final = (frames.Hello, frames.Welcome)
# What decoding a bad payload raises. msgspec lets two faults of the input through unwrapped:
# invalid UTF-8 in a str (UnicodeDecodeError) and nesting past the recursion limit, in a field it
# skips (RecursionError). Both are bad frames too, not bugs.
_UNDECODABLE: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_DECODERS: Final[dict[Role, msgspec.msgpack.Decoder[Any]]] = {
    # A server decodes what clients send, and the other way round.
    Role.SERVER: msgspec.msgpack.Decoder(frames.ClientFrame),
    Role.CLIENT: msgspec.msgpack.Decoder(frames.ServerFrame),
}


class Connection:
    """One session connection, either end."""

    __slots__ = (
        "_buf", "_decoder", "_eof", "_framed", "_hello_sent", "_last_received", "_last_sent",
        "_payloads", "_pings", "_pos", "heartbeat_s", "idle_timeout_s", "max_frame_bytes", "role",
        "state", "version",
    )  # fmt: skip

    def __init__(
        self,
        role: Role,
        *,
        max_frame_bytes: int = 1 << 20,
        heartbeat_s: float = 30.0,
        idle_timeout_s: float = 90.0,
        framed: bool = True,
        now: float = 0.0,
    ) -> None:
        self.role = role
        self.state = State.HANDSHAKE
        #: the version agreed once the handshake is done (before it: the newest this side offers)
        self.version = frames.VERSION
        self.max_frame_bytes = max_frame_bytes
        self.heartbeat_s = heartbeat_s
        self.idle_timeout_s = idle_timeout_s
        self._framed = framed
        self._decoder = _DECODERS[role]
        self._buf = bytearray()
        self._pos = 0  # start of the unparsed bytes in _buf
        self._eof = False
        # unframed mode: whole payloads waiting. A list, not a deque: an empty deque is 760 bytes,
        # and there is one codec per connection, mostly idle.
        self._payloads: list[bytes] = []
        self._last_received = now
        self._last_sent = now
        self._hello_sent = False
        self._pings = 0

    # -- input --------------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the stream (framed), or one whole WebSocket message (unframed). b"" is EOF."""
        if self.state is State.CLOSED:
            return
        self._last_received = now
        if not data:
            self._eof = True
        elif self._framed:
            self._buf += data
        else:
            self._payloads.append(data)

    def next_event(self) -> Any:
        """The next frame received, CLOSED_EVENT at EOF, or None until more data arrives."""
        if self.state is State.CLOSED:
            return None
        payload = self._next_payload()
        if payload is None:
            if self._eof:
                self.state = State.CLOSED
                return CLOSED_EVENT
            return None
        try:
            frame = self._decoder.decode(payload)
        except _UNDECODABLE as exc:
            self._fail(ErrorCode.BAD_FRAME, f"undecodable frame: {exc}")
        if self.state is State.HANDSHAKE or isinstance(frame, _HANDSHAKE_FRAMES):
            return self._check(frame)
        return frame

    def next_events(self) -> list[Any]:
        """The data frames complete in the buffer, decoded in one loop: what `next_event` would
        return one call at a time, for an open, framed connection. It stops before anything
        `next_event` handles itself (a handshake frame, a frame too large or undecodable, EOF), so
        a caller calls `next_event` once it returns an empty list. A pipelining peer's frames cost
        one call here instead of three each."""
        if self.state is not State.OPEN or not self._framed:
            return []
        frames: list[Any] = []
        buf, pos, limit, decode = self._buf, self._pos, self.max_frame_bytes, self._decoder.decode
        size = len(buf)
        while size - pos >= 4:
            (length,) = _PREFIX.unpack_from(buf, pos)
            end = pos + 4 + length
            if length > limit or size < end:
                break
            try:
                frame = decode(buf[pos + 4 : end])
            except _UNDECODABLE:
                break  # next_event decodes it again and says why
            if isinstance(frame, _HANDSHAKE_FRAMES):
                break
            frames.append(frame)
            pos = end
        self._pos = pos
        return frames

    def _next_payload(self) -> bytes | None:
        if not self._framed:
            if not self._payloads:
                return None
            payload = self._payloads.pop(0)
            if len(payload) > self.max_frame_bytes:
                self._fail(ErrorCode.FRAME_TOO_LARGE, f"frame of {len(payload)} bytes")
            return payload
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            self._compact()
            return None
        (length,) = _PREFIX.unpack_from(buf, pos)
        if length > self.max_frame_bytes:
            self._fail(ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes (max {self.max_frame_bytes})")
        end = pos + 4 + length
        if len(buf) < end:
            self._compact()
            return None
        payload = bytes(buf[pos + 4 : end])
        self._pos = end
        return payload

    def _compact(self) -> None:
        # Drop parsed bytes once per drained batch rather than per frame: deleting from the front
        # of a bytearray on every frame would make a burst of small frames quadratic.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _check(self, frame: Any) -> Any:
        if self.state is State.HANDSHAKE:
            if self.role is Role.CLIENT and isinstance(frame, frames.Error):
                return frame  # the server refuses the connection (version, full, no Hello in time)
            first = frames.Hello if self.role is Role.SERVER else frames.Welcome
            if not isinstance(frame, first):
                self._fail(ErrorCode.BAD_FRAME, f"expected {first.__name__}, got {type(frame).__name__}")
            # The server agrees on the older of the two newest versions; the client accepts any it
            # speaks, up to what its Hello offered.
            newest = frames.VERSION if self.role is Role.SERVER else min(self.version, frames.VERSION)
            if frame.version < frames.OLDEST_VERSION or (self.role is Role.CLIENT and frame.version > newest):
                speaks = f"version {frame.version}; this side speaks {frames.OLDEST_VERSION} to {newest}"
                self._fail(ErrorCode.UNSUPPORTED_VERSION, speaks)
            self.version = min(frame.version, newest)
            # OPEN as soon as a valid Hello arrives: a client may pipeline its Login behind it.
            self.state = State.OPEN
            return frame
        if isinstance(frame, _HANDSHAKE_FRAMES):
            self._fail(ErrorCode.BAD_FRAME, "handshake repeated")
        return frame

    def _fail(self, code: ErrorCode, message: str) -> None:
        self.state = State.CLOSED
        raise RemoteProtocolError(code, message)

    # -- output -------------------------------------------------------------------------------------

    def send(self, frame: frames.Frame, now: float) -> bytes:
        """The bytes of `frame` (with its length prefix when framed).

        Still allowed once CLOSED: what the transport had decided to send before the peer broke
        the protocol goes out ahead of the Error that says why, then the transport closes."""
        if self.state is State.HANDSHAKE and not self._hello_sent:
            expected = frames.Hello if self.role is Role.CLIENT else frames.Welcome
            if not isinstance(frame, expected | frames.Error):
                raise LocalProtocolError(f"{type(frame).__name__} before {expected.__name__}")
            # A client may follow its Hello at once with a Login (no round trip to wait for).
            if self.role is Role.CLIENT and isinstance(frame, frames.Hello):
                self._hello_sent = True
                self.version = frame.version  # the newest the Welcome may agree on
        elif self.version < 2 and (
            isinstance(frame, frames.Messages | frames.GoAway)
            or (isinstance(frame, frames.Delivered) and frame.first)
        ):
            raise LocalProtocolError(f"{type(frame).__name__} needs version 2; this connection speaks 1")
        self._last_sent = now
        payload = _ENCODER.encode(frame)
        return _PREFIX.pack(len(payload)) + payload if self._framed else payload

    def send_many(self, batch: list[frames.Frame], now: float) -> bytes:
        """Several frames as one buffer: one write for a burst (the transport's fast path). Framed
        mode only: unframed, each frame must be its own WebSocket message."""
        if not self._framed:
            raise LocalProtocolError("send_many needs the length prefix; send frames one by one")
        if self.state is State.HANDSHAKE or self.version < 2:
            return b"".join([self.send(frame, now) for frame in batch])  # with send's checks
        # Version 2 allows every frame: each is encoded in place, behind room for its prefix.
        self._last_sent = now
        out = bytearray()
        encode_into, pack_into = _ENCODER.encode_into, _PREFIX.pack_into
        for frame in batch:
            start = len(out)
            out += b"\0\0\0\0"
            encode_into(frame, out, -1)
            pack_into(out, start, len(out) - start - 4)
        return bytes(out)

    @property
    def framed(self) -> bool:
        return self._framed

    def close(self) -> None:
        self.state = State.CLOSED

    # -- timers -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        return min(self._last_sent + self.heartbeat_s, self._last_received + self.idle_timeout_s)

    def handle_timer(self, now: float) -> bytes:
        """Bytes to write now (a Ping), or b"". Raises RemoteProtocolError(IDLE_TIMEOUT) when the peer
        has been silent for idle_timeout_s: send the Error it carries and close."""
        if self.state is State.CLOSED:
            return b""
        if now >= self._last_received + self.idle_timeout_s:
            self._fail(ErrorCode.IDLE_TIMEOUT, f"nothing received for {self.idle_timeout_s:g} s")
        if self.state is State.OPEN and now >= self._last_sent + self.heartbeat_s:
            self._pings += 1
            return self.send(frames.Ping(n=self._pings), now)
        return b""
