"""The oracle of the session codec: `Connection` in either role, framed or as WebSocket payloads."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from dmds.bench.fuzz.rule import RuleBroken, in_pieces

if TYPE_CHECKING:
    from dmds.protocols.session.frames import Frame


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


def welcome(version: int) -> Frame:
    """A server's Welcome of `version`, with the default limits."""
    from dmds.protocols.session import frames  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

    return frames.Welcome(
        version=version,
        server="dmds",
        heartbeat_s=30.0,
        idle_timeout_s=90.0,
        max_frame_bytes=1 << 20,
        max_text_bytes=65536,
        max_attachment_bytes=10 << 20,
    )


def session_oracle(role: str) -> Callable[..., list[object]]:
    """A checker of `Connection` in `role` ("server" or "client").

    ``verdict(data, *, chunk=0, framed=True, handshake=True, max_frame_bytes=1 << 20)`` feeds the
    data and then EOF. With `handshake`, a valid Hello (server) or Welcome (client) comes first.
    It returns the events, ending with CLOSED_EVENT or ``("error", code)``."""
    from dmds.protocols.session import connection, frames  # noqa: PLC0415 - imported late: see dmds.bench.fuzz
    from dmds.protocols.session.codes import ErrorCode  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

    is_server = role == "server"
    if role not in ("server", "client"):
        raise ValueError(f"role is server or client, not {role!r}")
    me = connection.Role.SERVER if is_server else connection.Role.CLIENT
    accepted: tuple[type[Any], ...] = typing.get_args(frames.ClientFrame if is_server else frames.ServerFrame)
    first: type[Any] = frames.Hello if is_server else frames.Welcome
    allowed = {ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNSUPPORTED_VERSION}
    decoder = msgspec.msgpack.Decoder(frames.ClientFrame if is_server else frames.ServerFrame)
    greeting: frames.Frame = (
        frames.Hello(version=frames.VERSION, client="fuzz") if is_server else welcome(frames.VERSION)
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
            pieces = in_pieces(head + data, chunk)
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
