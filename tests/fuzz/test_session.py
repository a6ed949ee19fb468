"""Session codec, both roles, fed random bytes and mutations of real frames encoded by the codec:
bytes flipped, length prefixes changed, streams truncated and concatenated, MessagePack of wrong
types, unknown tags, huge integers, deep nesting. Allowed: the role's frames, CLOSED_EVENT at EOF,
or RemoteProtocolError with BAD_FRAME, FRAME_TOO_LARGE or UNSUPPORTED_VERSION (the oracle in
dmds.bench.fuzz checks the rest). The exact verdict is asserted wherever the contract fixes it."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmds.bench.fuzz import SESSION_SMALL_FRAME, session_oracle
from dmds.bench.fuzz.session import welcome
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import CLOSED_EVENT, Connection, Role

ROLES = ("server", "client")
ORACLES = {role: session_oracle(role) for role in ROLES}
BAD_FRAME = ("error", ErrorCode.BAD_FRAME)

_char = st.characters(exclude_categories=["Cs"])
alias = st.text(_char, min_size=1, max_size=64)
short = st.text(_char, max_size=20)
any_int = st.integers(-(2**63), 2**64 - 1)  # every MessagePack integer
unsigned = st.integers(0, 2**64 - 1)
request_id = st.integers(1, 2**32 - 1)
message_id = st.integers(1, 2**53)
any_float = st.floats()  # NaN and infinities included
attachment = st.builds(f.Attachment, attachment_id=any_int, name=short, media_type=short, size=any_int)

CLIENT_FRAMES: st.SearchStrategy[f.Frame] = st.one_of(
    st.builds(f.Ping, n=any_int),
    st.builds(f.Pong, n=any_int),
    st.builds(f.Register, id=request_id, alias=alias, full_name=short, birth_date=short, password=short),
    st.builds(f.Login, id=request_id, alias=alias, password=short, token=short),
    st.builds(f.Logout, id=request_id),
    st.builds(f.ChangePassword, id=request_id, old_password=short, new_password=short),
    st.builds(f.DeleteAccount, id=request_id, password=short),
    st.builds(f.Send, id=request_id, to=alias, key=alias, text=st.text(_char), attachment=any_int),
    st.builds(f.Ack, message_ids=st.lists(message_id, max_size=4)),
    st.builds(f.MarkRead, message_ids=st.lists(message_id, max_size=4)),
    st.builds(f.Subscribe, id=request_id),
    st.builds(f.History, id=request_id, peer=alias, before=any_float, limit=st.integers(1, 500)),
    st.builds(f.UploadStart, id=request_id, name=short, media_type=short, size=unsigned),
    st.builds(f.UploadChunk, id=request_id, upload=any_int, offset=unsigned, data=st.binary(max_size=40)),
    st.builds(f.Fetch, id=request_id, attachment=any_int, offset=unsigned, length=st.integers(1, 2**64 - 1)),
)
_entry = st.builds(
    f.HistoryEntry,
    sender=alias,
    recipient=alias,
    message_id=message_id,
    text=short,
    sent_at=any_float,
    delivered_at=any_float,
    read_at=any_float,
    attachment=st.none() | attachment,
)
SERVER_FRAMES: st.SearchStrategy[f.Frame] = st.one_of(
    st.builds(f.Ping, n=any_int),
    st.builds(f.Pong, n=any_int),
    st.builds(f.Error, code=st.sampled_from(ErrorCode), message=short, re=any_int, retry_after_s=any_float),
    st.builds(f.Ok, re=any_int),
    st.builds(f.LoggedIn, re=any_int, alias=alias, token=short, expires_at=any_float),
    st.builds(f.Accepted, re=any_int, to=alias, key=alias, message_id=message_id),
    st.builds(
        f.Message,
        sender=alias,
        message_id=message_id,
        text=st.text(_char),
        sent_at=any_float,
        attachment=st.none() | attachment,
    ),
    st.builds(f.Delivered, to=alias, message_id=message_id, key=short),
    st.builds(f.Read, to=alias, message_id=message_id, key=short),
    st.builds(f.Presence, re=any_int, online=st.lists(alias, max_size=3)),
    st.builds(f.PresenceChanged, alias=alias, online=st.booleans()),
    st.builds(f.HistoryPage, re=any_int, entries=st.lists(_entry, max_size=3), more=st.booleans()),
    st.builds(f.UploadReady, re=any_int, upload=any_int, offset=any_int, attachment=any_int),
    st.builds(
        f.Chunk, re=any_int, attachment=any_int, offset=any_int, data=st.binary(max_size=40), size=any_int
    ),
)
FRAMES = {"server": CLIENT_FRAMES, "client": SERVER_FRAMES}
HELLO = f.Hello(version=f.VERSION, client="fuzz")
WELCOME = welcome(f.VERSION)  # the oracle's own greeting
#: the greeting the oracle puts first, per role under test
GREETING = {"server": HELLO, "client": WELCOME}
TAGS = {role: {cls.__struct_config__.tag: cls for cls in typing.get_args(union)} for role, union in
        (("server", f.ClientFrame), ("client", f.ServerFrame))}  # fmt: skip

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | any_int
    | any_float
    | st.text(_char, max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=8)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | any_int, inner, max_size=3)
    ),
    max_leaves=10,
)


def _encoder(role: str, *, framed: bool = True) -> Connection:
    """The codec at the other end, opened, so that frames are encoded by the codec itself."""
    peer = Connection(Role.CLIENT if role == "server" else Role.SERVER, framed=framed)
    greeting = msgspec.msgpack.encode(WELCOME if role == "server" else HELLO)
    peer.receive_data(len(greeting).to_bytes(4, "big") + greeting if framed else greeting, 0.0)
    assert peer.next_event() is not None
    return peer


def _stream(role: str, frames: list[f.Frame]) -> bytes:
    peer = _encoder(role)
    return b"".join(peer.send(frame, 0.0) for frame in frames)


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _same_frames(events: list[object], frames: list[f.Frame]) -> bool:
    # Compared encoded: NaN != NaN would fail an == on the frames themselves.
    enc = msgspec.msgpack.encode
    return [enc(e) for e in events] == [enc(x) for x in frames]


def _decoded(role: str, frame: f.Frame, verdict: list[object]) -> bool:
    return len(verdict) == 3 and verdict[2] is CLOSED_EVENT and _same_frames(verdict[1:2], [frame])


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=80, deadline=None)
@given(data=st.data(), chunk=st.integers(0, 9))
def test_valid_stream_in_any_segmentation(role: str, data: st.DataObject, chunk: int) -> None:
    frames = data.draw(st.lists(FRAMES[role], max_size=6))
    verdict = ORACLES[role](_stream(role, frames), chunk=chunk)
    assert verdict[-1] is CLOSED_EVENT
    assert _same_frames(verdict[:-1], [GREETING[role], *frames])
    peer = _encoder(role, framed=False)
    unframed = b"".join(_framed(peer.send(frame, 0.0)) for frame in frames)
    assert _same_frames(ORACLES[role](unframed, framed=False)[:-1], [GREETING[role], *frames])


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_truncated_stream_drops_only_the_partial_frame(role: str, data: st.DataObject) -> None:
    frames = data.draw(st.lists(FRAMES[role], min_size=1, max_size=4))
    encoded = [_stream(role, [frame]) for frame in frames]
    stream = b"".join(encoded)
    ends = [sum(len(e) for e in encoded[: i + 1]) for i in range(len(encoded))]
    for cut in range(len(stream)):
        complete = [frame for frame, end in zip(frames, ends, strict=True) if end <= cut]
        verdict = ORACLES[role](stream[:cut])
        assert verdict[-1] is CLOSED_EVENT
        assert _same_frames(verdict[1:-1], complete)


def _mutations(stream: bytes) -> st.SearchStrategy[bytes]:
    n = len(stream)
    at = st.integers(0, n)

    def flip(pos: int, mask: int) -> bytes:
        if not n:
            return stream
        pos %= n
        return stream[:pos] + bytes([stream[pos] ^ mask]) + stream[pos + 1 :]

    def relength(pos: int, value: int) -> bytes:
        # Overwrite 4 bytes with a new length; at a frame boundary it is that frame's prefix.
        return stream[:pos] + value.to_bytes(4, "big") + stream[pos + 4 :]

    return st.one_of(
        st.builds(flip, at, st.integers(1, 255)),
        st.builds(
            relength, at, st.sampled_from([0, 1, 3, 2**20, 2**20 + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)
        ),
        st.builds(lambda a, b: stream[: min(a, b)] + stream[max(a, b) :], at, at),  # delete a range
        st.builds(lambda a, junk: stream[:a] + junk + stream[a:], at, st.binary(min_size=1, max_size=9)),
        st.builds(lambda a, b: stream + stream[min(a, b) : max(a, b)], at, at),  # concatenate a slice
        st.builds(lambda a: stream[:a], at),
    )


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), chunk=st.integers(1, 7), small=st.booleans())
def test_mutated_stream_gives_frames_or_a_protocol_error(
    role: str, data: st.DataObject, chunk: int, small: bool
) -> None:
    frames = data.draw(st.lists(FRAMES[role], min_size=1, max_size=4))
    mutated = data.draw(_mutations(_stream(role, frames)))
    limit = SESSION_SMALL_FRAME if small else 1 << 20
    oracle = ORACLES[role]
    whole = oracle(mutated, max_frame_bytes=limit)
    assert repr(oracle(mutated, chunk=chunk, max_frame_bytes=limit)) == repr(whole)
    oracle(mutated, framed=False, max_frame_bytes=limit)
    oracle(mutated, handshake=False, max_frame_bytes=limit)


def _as_map(frame: f.Frame) -> dict[Any, Any]:
    decoded: dict[Any, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(frame))
    return decoded


def _is(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=200, deadline=None)
@given(data=st.data(), value=msgpack_values)
def test_field_of_the_wrong_type_is_bad_frame(role: str, data: st.DataObject, value: object) -> None:
    frame = data.draw(FRAMES[role])
    info = msgspec.inspect.type_info(type(frame))
    assert isinstance(info, msgspec.inspect.StructType)
    field = data.draw(st.sampled_from(info.fields))
    mapping = _as_map(frame)
    mapping[field.encode_name] = value
    verdict = ORACLES[role](_framed(msgspec.msgpack.encode(mapping)))
    assert verdict[1] == BAD_FRAME or _decoded(role, frame, verdict) or verdict[-1] is CLOSED_EVENT
    # Where the field's type rules the value out, the frame must be refused.
    kind = field.type
    wrong = (
        (isinstance(kind, msgspec.inspect.IntType) and not _is(value, int))
        or (isinstance(kind, msgspec.inspect.StrType) and not isinstance(value, str))
        or (isinstance(kind, msgspec.inspect.BytesType) and not isinstance(value, bytes | bytearray))
        or (isinstance(kind, msgspec.inspect.FloatType) and not (_is(value, int) or isinstance(value, float)))
        or (isinstance(kind, msgspec.inspect.BoolType) and not isinstance(value, bool))
        or (isinstance(kind, msgspec.inspect.ListType) and not isinstance(value, list))
    )
    if wrong:
        assert verdict[1:] == [BAD_FRAME]


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), key=st.text(_char, max_size=12), value=msgpack_values)
def test_unknown_key_is_ignored(role: str, data: st.DataObject, key: str, value: object) -> None:
    frame = data.draw(FRAMES[role])
    mapping = _as_map(frame)
    if key in mapping or key in type(frame).__struct_fields__:
        return  # not unknown: a field left out because it held its default (found by CI's draw)
    mapping[key] = value
    assert _decoded(role, frame, ORACLES[role](_framed(msgspec.msgpack.encode(mapping))))


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), tag=msgpack_values)
def test_unknown_foreign_or_missing_tag_is_bad_frame(role: str, data: st.DataObject, tag: object) -> None:
    frame = data.draw(FRAMES[role])
    mapping = _as_map(frame)
    foreign = [t for t in TAGS["client" if role == "server" else "server"] if t not in TAGS[role]]
    how = data.draw(st.sampled_from(["any", "foreign", "missing"]))
    if how == "missing":
        del mapping["t"]
    else:
        mapping["t"] = data.draw(st.sampled_from(foreign)) if how == "foreign" else tag
        if isinstance(mapping["t"], str) and mapping["t"] in TAGS[role]:
            return
    assert ORACLES[role](_framed(msgspec.msgpack.encode(mapping)))[1:] == [BAD_FRAME]


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_required_field_missing_is_bad_frame(role: str, data: st.DataObject) -> None:
    frame = data.draw(FRAMES[role])
    info = msgspec.inspect.type_info(type(frame))
    assert isinstance(info, msgspec.inspect.StructType)
    required = [fl.encode_name for fl in info.fields if fl.required]
    if not required:
        return
    mapping = _as_map(frame)
    del mapping[data.draw(st.sampled_from(required))]
    assert ORACLES[role](_framed(msgspec.msgpack.encode(mapping)))[1:] == [BAD_FRAME]


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=60, deadline=None)
@given(top=msgpack_values.filter(lambda v: not isinstance(v, dict)))
def test_payload_that_is_not_a_map_is_bad_frame(role: str, top: object) -> None:
    assert ORACLES[role](_framed(msgspec.msgpack.encode(top)))[1:] == [BAD_FRAME]


BOUNDARY_INTS = [0, 1, 2**32 - 1, 2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**64 - 1, -1, -(2**63)]


@pytest.mark.parametrize("value", BOUNDARY_INTS)
def test_huge_ints_within_or_outside_the_declared_ranges(value: int) -> None:
    sent = ORACLES["server"](_framed(msgspec.msgpack.encode({"t": "logout", "id": value})))
    assert (sent[1] == f.Logout(id=value)) if 1 <= value < 2**32 else sent[1:] == [BAD_FRAME]
    acked = ORACLES["server"](_framed(msgspec.msgpack.encode({"t": "ack", "message_ids": [value]})))
    assert (acked[1] == f.Ack(message_ids=[value])) if 1 <= value <= 2**53 else acked[1:] == [BAD_FRAME]
    pinged = ORACLES["client"](_framed(msgspec.msgpack.encode({"t": "ping", "n": value})))
    assert pinged[1] == f.Ping(n=value)  # n is any MessagePack integer
    for not_an_int in (True, float(value), str(value)):
        refused = ORACLES["server"](_framed(msgspec.msgpack.encode({"t": "logout", "id": not_an_int})))
        assert refused[1:] == [BAD_FRAME]


def _nested(depth: int, kind: str) -> bytes:
    """MessagePack of `depth` nested one-element arrays or maps around a nil, built by hand: the
    encoder itself stops at its recursion limit."""
    opener = b"\x91" if kind == "array" else b"\x81\xa1k"
    return opener * depth + b"\xc0"


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 5000), kind=st.sampled_from(["array", "map"]), typed=st.booleans())
def test_deep_nesting_is_a_frame_or_bad_frame(role: str, depth: int, kind: str, typed: bool) -> None:
    if typed:  # in a list field: refused at the first element of the wrong type
        head = (
            b"\x82\xa1t\xa3ack\xabmessage_ids"
            if role == "server"
            else b"\x83\xa1t\xa8presence\xa2re\x01\xa6online"
        )
        assert ORACLES[role](_framed(head + _nested(depth, kind)))[1:] == [BAD_FRAME]
    else:  # in an unknown field, skipped: fine until msgspec's recursion limit
        verdict = ORACLES[role](_framed(b"\x82\xa1t\xa4ping\xa1x" + _nested(depth, kind)))
        assert verdict[1:] == [BAD_FRAME] or verdict[1] == f.Ping(n=0)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["array", "map"])
@pytest.mark.parametrize("framed", [True, False])
def test_regression_nesting_past_the_recursion_limit_is_bad_frame(role: str, kind: str, framed: bool) -> None:
    """msgspec raised RecursionError while skipping a deeply nested unknown field. It escaped the
    codec, so the server dropped the connection with an asyncio traceback and no Error frame."""
    payload = b"\x82\xa1t\xa4ping\xa1x" + _nested(100_000, kind)
    assert ORACLES[role](_framed(payload), framed=framed)[1:] == [BAD_FRAME]


def _with_invalid_utf8(frame: f.Frame) -> bytes:
    # The placeholder text "\x01\x02" is encoded as a2 01 02: make it a2 ff fe.
    return msgspec.msgpack.encode(frame).replace(b"\xa2\x01\x02", b"\xa2\xff\xfe")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("where", ["tag", "value"])
def test_regression_invalid_utf8_in_a_str_is_bad_frame(role: str, where: str) -> None:
    """msgspec raised UnicodeDecodeError for invalid UTF-8 in a MessagePack str it decodes (the tag,
    a str field). It escaped the codec, with the same consequence as above."""
    if where == "tag":
        payload = b"\x81\xa1t\xa4pin\xff"
    elif role == "server":
        payload = _with_invalid_utf8(f.Send(id=1, to="maria", key="k", text="\x01\x02"))
    else:
        payload = _with_invalid_utf8(f.Error(code=ErrorCode.INTERNAL, message="\x01\x02"))
    assert b"\xff\xfe" in payload or where == "tag"
    assert ORACLES[role](_framed(payload))[1:] == [BAD_FRAME]


@pytest.mark.parametrize("role", ROLES)
def test_invalid_utf8_in_a_skipped_field_is_ignored(role: str) -> None:
    # An unknown field is skipped undecoded: its bytes do not matter.
    assert ORACLES[role](_framed(b"\x82\xa1t\xa4ping\xa1x\xa2\xff\xfe"))[1] == f.Ping(n=0)


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=30, deadline=None)
@given(excess=st.integers(1, 2**32 - 1 - SESSION_SMALL_FRAME), framed=st.booleans())
def test_length_above_the_limit_is_frame_too_large(role: str, excess: int, framed: bool) -> None:
    size = SESSION_SMALL_FRAME + excess
    # Framed, refused on the 4 prefix bytes alone, before any payload.
    data = size.to_bytes(4, "big") if framed else _framed(b"\x80" * min(size, SESSION_SMALL_FRAME + 5))
    verdict = ORACLES[role](data, framed=framed, max_frame_bytes=SESSION_SMALL_FRAME)
    assert verdict[1:] == [("error", ErrorCode.FRAME_TOO_LARGE)]


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_handshake_rules(role: str, data: st.DataObject) -> None:
    # A server answers a newer client in its own version; a client takes only what it speaks.
    newest = 2**64 if role == "server" else f.VERSION
    unspoken = lambda v: not f.OLDEST_VERSION <= v <= newest  # noqa: E731
    version = data.draw(any_int.filter(unspoken))
    oracle = ORACLES[role]
    greeting = _as_map(GREETING[role])
    greeting["version"] = version
    assert oracle(_framed(msgspec.msgpack.encode(greeting)), handshake=False) == [
        ("error", ErrorCode.UNSUPPORTED_VERSION)
    ]
    frame = data.draw(FRAMES[role])
    first = oracle(_stream(role, [frame]), handshake=False)
    if role == "client" and isinstance(frame, f.Error):
        assert _same_frames(first[:1], [frame])  # a refusal may come first
    else:
        assert first == [BAD_FRAME]
    assert oracle(_stream(role, [GREETING[role]]))[1:] == [BAD_FRAME]  # handshake repeated


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), handshake=st.booleans(), small=st.booleans(), chunk=st.integers(1, 7))
def test_random_bytes(role: str, data: bytes, handshake: bool, small: bool, chunk: int) -> None:
    oracle = ORACLES[role]
    limit = SESSION_SMALL_FRAME if small else 1 << 20
    whole = oracle(data, handshake=handshake, max_frame_bytes=limit)
    assert repr(oracle(data, handshake=handshake, max_frame_bytes=limit, chunk=chunk)) == repr(whole)
    oracle(data, framed=False, handshake=handshake, max_frame_bytes=limit)
