"""The session codec without sockets: a client and a server Connection passing bytes to each other."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from dmds.protocols.session.connection import (
    CLOSED_EVENT,
    Connection,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
)

WELCOME = f.Welcome(
    version=f.VERSION,
    server="dmds",
    heartbeat_s=30,
    idle_timeout_s=90,
    max_frame_bytes=1 << 20,
    max_text_bytes=65536,
    max_attachment_bytes=10 << 20,
)


def drain(conn: Connection) -> list[Any]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
        if event is CLOSED_EVENT:
            break
    return events


def pair(**server_kw: Any) -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER, **server_kw)
    server.receive_data(client.send(f.Hello(version=f.VERSION, client="test"), 0), 0)
    assert drain(server) == [f.Hello(version=f.VERSION, client="test")]
    client.receive_data(server.send(WELCOME, 0), 0)
    assert drain(client) == [WELCOME]
    assert client.state is server.state is State.OPEN
    return client, server


def test_round_trip_every_client_frame() -> None:
    client, server = pair()
    sent = [
        f.Register(id=1, alias="juan", full_name="Juan Pérez", birth_date="01/02/2000", password="pw"),
        f.Login(id=2, alias="juan", password="pw"),
        f.Login(id=3, token="tok"),
        f.Send(id=4, to="maria", key="k-1", text="hola ñ 🐦"),
        f.Ack(message_ids=[1, 2, 3]),
        f.MarkRead(message_ids=[2]),
        f.Subscribe(id=5),
        f.History(id=6, peer="maria", before=12.5, limit=10),
        f.UploadStart(id=7, name="a.txt", media_type="text/plain", size=3),
        f.UploadChunk(id=8, upload=1, offset=0, data=b"\x00\xff\x01"),
        f.Fetch(id=9, attachment=1),
        f.Ping(n=3),
        f.Logout(id=10),
    ]
    server.receive_data(client.send_many(sent, 1), 1)  # one buffer, many frames
    assert drain(server) == sent


def test_round_trip_server_pushes() -> None:
    client, server = pair()
    sent = [
        f.Accepted(re=4, to="maria", key="k-1", message_id=7),
        f.Message(
            sender="juan", message_id=1, text="hola", sent_at=1.5, attachment=f.Attachment(1, "a", "b/c", 3)
        ),
        f.Delivered(to="maria", message_id=7, key="k-1"),
        f.Read(to="maria", message_id=7),
        f.Presence(re=5, online=["juan", "maria"]),
        f.PresenceChanged(alias="pedro", online=False),
        f.Error(code=ErrorCode.BAD_CREDENTIALS, message="no", re=2),
        f.Chunk(re=9, attachment=1, offset=0, data=b"abc", size=3),
    ]
    data = server.send_many(sent, 1)
    assert data == b"".join(server.send(frame, 1) for frame in sent)  # its fast path, the same bytes
    for i in range(len(data)):  # byte at a time: frames come out whole, in order
        client.receive_data(data[i : i + 1], 1)
    assert drain(client) == sent


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 10])
def test_split_frames(cut: int) -> None:
    client, server = pair()
    data = client.send(f.Send(id=1, to="maria", key="k", text="x" * 20), 0)
    server.receive_data(data[:cut], 0)
    assert drain(server) == []
    server.receive_data(data[cut:], 0)
    assert drain(server) == [f.Send(id=1, to="maria", key="k", text="x" * 20)]


def test_a_client_may_log_in_right_after_its_hello() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    login = f.Login(id=1, alias="a", password="b")
    # No round trip to wait for: Hello and Login leave together, before the Welcome.
    server.receive_data(client.send(f.Hello(version=f.VERSION), 0) + client.send(login, 0), 0)
    assert drain(server) == [f.Hello(version=f.VERSION), login]
    with pytest.raises(LocalProtocolError):  # but nothing before the Hello itself
        Connection(Role.CLIENT).send(login, 0)


def test_first_frame_must_be_hello() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        client.send(f.Login(id=1, alias="a", password="b"), 0)
    raw = msgspec.msgpack.encode(f.Login(id=1, alias="a", password="b"))
    server.receive_data(len(raw).to_bytes(4, "big") + raw, 0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.BAD_FRAME
    assert server.state is State.CLOSED
    assert server.next_event() is None  # and it stays closed


def test_unsupported_version() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(f.Hello(version=0), 0), 0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    # A client refuses a Welcome above what its Hello offered.
    client = Connection(Role.CLIENT)
    client.send(f.Hello(version=1), 0)
    welcome = f.Welcome(version=2, server="s", heartbeat_s=1, idle_timeout_s=3, max_frame_bytes=1,
                        max_text_bytes=1, max_attachment_bytes=1)  # fmt: skip
    client.receive_data(Connection(Role.SERVER).send(welcome, 0), 0)
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(("offered", "agreed"), [(1, 1), (2, 2), (99, f.VERSION)])
def test_the_version_agreed_is_the_older_of_the_two_newest(offered: int, agreed: int) -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(f.Hello(version=offered), 0), 0)
    assert isinstance(server.next_event(), f.Hello)
    assert server.version == agreed
    welcome = f.Welcome(version=server.version, server="s", heartbeat_s=1, idle_timeout_s=3,
                        max_frame_bytes=1 << 20, max_text_bytes=1, max_attachment_bytes=1)  # fmt: skip
    client.receive_data(server.send(welcome, 0), 0)
    assert isinstance(client.next_event(), f.Welcome)
    assert client.version == agreed


def test_a_version_1_connection_is_never_sent_what_only_version_2_has() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(f.Hello(version=1), 0), 0)
    server.next_event()
    message = f.Message(sender="ana", message_id=1, text="hi", sent_at=1.0)
    only_in_2 = (
        f.Messages(messages=[message, message]),
        f.Delivered(to="bob", message_id=3, first=1),
        f.GoAway(reason="stopping"),
    )
    for frame in only_in_2:
        with pytest.raises(LocalProtocolError):
            server.send(frame, 0)
    server.send(f.Delivered(to="bob", message_id=3), 0)  # one message's receipt: version 1 has it


def test_frame_too_large_is_refused_from_its_prefix() -> None:
    _, server = pair(max_frame_bytes=100)
    server.receive_data((101).to_bytes(4, "big"), 0)  # no payload yet: refused at once
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never valid msgpack
        msgspec.msgpack.encode({"t": "nope"}),
        msgspec.msgpack.encode({"t": "send", "id": 1, "to": "", "key": "k", "text": "x"}),  # empty alias
        msgspec.msgpack.encode({"t": "send", "id": -1, "to": "a", "key": "k", "text": "x"}),
        msgspec.msgpack.encode({"t": "send", "id": 1, "to": "a", "key": "k"}),  # missing text
        msgspec.msgpack.encode({"t": "welcome", "version": 1}),  # a server frame from a client
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_malformed_frames(payload: bytes) -> None:
    _, server = pair()
    server.receive_data(len(payload).to_bytes(4, "big") + payload, 0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.BAD_FRAME


def test_repeated_hello() -> None:
    _, server = pair()
    raw = msgspec.msgpack.encode(f.Hello(version=f.VERSION))
    server.receive_data(len(raw).to_bytes(4, "big") + raw, 0)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_eof() -> None:
    _, server = pair()
    server.receive_data(b"", 5)
    assert drain(server) == [CLOSED_EVENT]
    assert server.state is State.CLOSED


def test_unframed_mode_for_websocket() -> None:
    client = Connection(Role.CLIENT, framed=False)
    server = Connection(Role.SERVER, framed=False, max_frame_bytes=200)
    server.receive_data(client.send(f.Hello(version=f.VERSION), 0), 0)
    assert drain(server) == [f.Hello(version=f.VERSION)]
    client.receive_data(server.send(WELCOME, 0), 0)
    assert drain(client) == [WELCOME]
    server.receive_data(client.send(f.Send(id=1, to="a", key="k", text="t"), 0), 0)
    assert drain(server) == [f.Send(id=1, to="a", key="k", text="t")]
    server.receive_data(client.send(f.Send(id=2, to="a", key="k", text="t" * 300), 0), 0)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_heartbeat_and_idle_timeout() -> None:
    client = Connection(Role.CLIENT, heartbeat_s=10, idle_timeout_s=30)
    server = Connection(Role.SERVER, heartbeat_s=10, idle_timeout_s=30)
    server.receive_data(client.send(f.Hello(version=f.VERSION), 0), 0)
    drain(server)
    client.receive_data(server.send(WELCOME, 0), 0)
    drain(client)
    assert server.get_timer() == 10
    assert server.handle_timer(5) == b""
    client.receive_data(server.handle_timer(10), 10)  # nothing sent for heartbeat_s: a Ping
    assert drain(client) == [f.Ping(n=1)]
    assert server.get_timer() == 20
    server.receive_data(client.send(f.Pong(n=1), 12), 12)  # anything received resets idleness
    drain(server)
    client.receive_data(server.handle_timer(20), 20)
    assert drain(client) == [f.Ping(n=2)]
    assert server.handle_timer(41) != b""  # another Ping: silent, but not yet for idle_timeout_s
    with pytest.raises(RemoteProtocolError) as info:
        server.handle_timer(42)  # nothing received since 12
    assert info.value.code is ErrorCode.IDLE_TIMEOUT
    assert server.get_timer() is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_give_frames_or_a_protocol_error(data: bytes, step: int) -> None:
    _, server = pair(max_frame_bytes=256)
    code: object = None
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step], 0)
            drain(server)
        server.receive_data(b"", 0)
        drain(server)
    except RemoteProtocolError as exc:
        code = exc.code
    assert code is None or isinstance(code, ErrorCode)


def test_a_client_reads_an_error_instead_of_welcome() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client.send(f.Hello(version=f.VERSION), 0)
    client.receive_data(server.send(f.Error(code=ErrorCode.UNSUPPORTED_VERSION, message="no"), 0), 0)
    assert drain(client) == [f.Error(code=ErrorCode.UNSUPPORTED_VERSION, message="no")]


def drain_fast(conn: Connection) -> list[Any]:
    """`drain` the way the server reads: the buffered frames in one call, the rest one by one."""
    events: list[Any] = []
    while True:
        for event in conn.next_events() or [conn.next_event()]:
            if event is None:
                return events
            events.append(event)
            if event is CLOSED_EVENT:
                return events


_PIECES: list[f.Frame | bytes] = [
    f.Send(id=1, to="maria", key="k-1", text="hola"),
    f.Ack(message_ids=[1, 2, 3]),
    f.Ping(n=1),
    f.Hello(version=f.VERSION),  # not again after the handshake: a protocol error
    b"\x00\x00\x00\x03\x01\x02\x03",  # a frame that decodes to nothing
    b"\x7f\xff\xff\xff",  # a prefix past the frame limit
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(_PIECES))), max_size=12),
    st.integers(min_value=1, max_value=64),
    st.booleans(),
)
def test_next_events_gives_what_next_event_gives_one_by_one(picks: list[int], step: int, eof: bool) -> None:
    client, _ = pair()
    pieces = [_PIECES[i] for i in picks]
    # A Hello is encoded by hand: the client's codec rightly refuses to send a second one.
    data = b"".join(
        p if isinstance(p, bytes) else _raw(p) if isinstance(p, f.Hello) else client.send(p, 0)
        for p in pieces
    )
    results = []
    for read in (drain, drain_fast):
        _, server = pair(max_frame_bytes=256)
        got: list[Any] = []
        try:
            for i in range(0, len(data), step):
                server.receive_data(data[i : i + step], 0)
                got += read(server)
            if eof:
                server.receive_data(b"", 0)
                got += read(server)
        except RemoteProtocolError as exc:
            got.append(exc.code)
        results.append(got)
    assert results[0] == results[1]
    if all(i < 3 for i in picks):  # data frames only: every one comes out
        assert results[0][: len(picks)] == pieces


def _raw(frame: f.Frame) -> bytes:
    payload = msgspec.msgpack.encode(frame)
    return len(payload).to_bytes(4, "big") + payload


def test_next_events_takes_every_buffered_data_frame_and_leaves_the_rest() -> None:
    client, server = pair()
    frames: list[f.Frame] = [f.Send(id=n, to="maria", key=f"k{n}", text="t") for n in range(1, 6)]
    data = client.send_many(frames, 0)
    server.receive_data(data + data[:7], 0)  # five frames and the start of a sixth
    assert server.next_events() == frames
    assert server.next_events() == []
    assert server.next_event() is None  # the sixth is not complete
    fresh = Connection(Role.SERVER)  # during the handshake: one at a time
    fresh.receive_data(client.send(f.Hello(version=f.VERSION), 0), 0)
    assert fresh.next_events() == []
    assert fresh.next_event() == f.Hello(version=f.VERSION)
