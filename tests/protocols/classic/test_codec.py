"""The classic codec on literal bytes from classic.md, fed whole, split at every point and byte by byte."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmds.errors import AliasTaken, AlreadyConnected, NotConnected, UnknownUser
from dmds.protocols.classic import (
    ClientConnection,
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    LocalProtocolError,
    MessagePush,
    PushReader,
    ReceiptPush,
    Register,
    RemoteProtocolError,
    Reply,
    Request,
    Send,
    SendReply,
    ServerConnection,
    Unregister,
    encode_push,
)
from dmds.protocols.classic.codes import code_for, error_reply
from dmds.protocols.classic.events import REQUESTS
from tests import wire


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The data whole, cut in two at every point, and one byte at a time."""
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]


def parse_request(chunks: list[bytes], eof: bool = False) -> Request | None:
    conn = ServerConnection(max_field_bytes=32, max_text_bytes=64)
    event = None
    for chunk in chunks:
        conn.receive_data(chunk)
        event = event or conn.next_event()
    if eof:
        conn.receive_data(b"")
        event = event or conn.next_event()
    return event


def assert_parses(data: bytes, expected: Request) -> None:
    for chunks in splits(data):
        assert parse_request(chunks) == expected, chunks
    # Trailing bytes after a complete request are not part of it and are ignored.
    assert parse_request([data + b"junk\0more"]) == expected
    assert parse_request([data], eof=True) == expected


def assert_rejects(data: bytes, op: type[Request] | None, *, eof: bool = True) -> None:
    for chunks in splits(data) if data else [[]]:
        with pytest.raises(RemoteProtocolError) as info:
            parse_request(chunks, eof=eof)
        assert info.value.op is op, chunks


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            wire.register("Juan Perez", "juan123", "01/02/2000"),
            Register("Juan Perez", "juan123", "01/02/2000"),
        ),
        (wire.unregister("juan123"), Unregister("juan123")),
        (wire.connect("juan123", 40001), Connect("juan123", 40001)),
        (wire.disconnect("juan123"), Disconnect("juan123")),
        (wire.send("juan123", "maria123", "Hola soy Juan"), Send("juan123", "maria123", "Hola soy Juan")),
        (wire.connected_users("maria123"), ConnectedUsers("maria123")),
        (wire.send("a", "b", "ñandú 🐦"), Send("a", "b", "ñandú 🐦")),
        (wire.send("a", "b", ""), Send("a", "b", "")),
    ],
)
def test_requests_parse_in_any_segmentation(data: bytes, expected: Request) -> None:
    assert_parses(data, expected)


def test_contract_example_bytes() -> None:
    # classic.md's example, as written by the original client.
    assert_parses(
        b"REGISTER\0Juan Perez\0juan123\x0001/02/2000\0", Register("Juan Perez", "juan123", "01/02/2000")
    )
    assert_parses(b"SEND\0juan123\0maria123\0Hola soy Juan\0", Send("juan123", "maria123", "Hola soy Juan"))


def test_incomplete_request_waits_for_more() -> None:
    assert parse_request([wire.send("a", "b", "text")[:-1]]) is None
    assert parse_request([b"REGIS"]) is None


@pytest.mark.parametrize(
    ("data", "op"),
    [
        (b"", None),  # empty request
        (b"\0", None),  # empty operation name
        (b"HELLO\0", None),
        (b"register\0x\0y\0z\0", None),  # names are case-sensitive
        (b"CONNECTEDUSERSX", None),  # unfinished name longer than any operation
        (b"REGISTER\0Juan\0juan\0", Register),  # EOF before the last field
        (b"SEND\0a\0b\0no end", Send),
        (b"CONNECT\0juan\0abc\0", Connect),  # port not a number
        (b"CONNECT\0juan\0-1\0", Connect),
        (b"CONNECT\0juan\0 80\0", Connect),
        (b"CONNECT\0juan\0\0", Connect),
        (b"CONNECT\0juan\0" + "٣".encode() + b"\0", Connect),  # non-ASCII digit
        (b"CONNECT\0juan\x0065536\0", Connect),
        (b"CONNECT\0juan\x000\0", Connect),
        (b"UNREGISTER\0\xff\xfe\0", Unregister),  # invalid UTF-8
        (b"SEND\0a\0b\0\xc3\0", Send),
        (b"DISCONNECT\0" + b"x" * 33 + b"\0", Disconnect),  # field over max_field_bytes
        (b"SEND\0a\0b\0" + b"t" * 65 + b"\0", Send),  # text over max_text_bytes
    ],
)
def test_bad_requests_name_their_operation(data: bytes, op: type[Request] | None) -> None:
    assert_rejects(data, op)


def test_limits_are_enforced_while_buffering() -> None:
    # No NUL yet, but already past the limit: fail before the peer sends the rest.
    conn = ServerConnection(max_field_bytes=32, max_text_bytes=64)
    conn.receive_data(b"DISCONNECT\0" + b"x" * 33)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    conn = ServerConnection(max_field_bytes=32, max_text_bytes=64)
    conn.receive_data(b"SEND\0a\0b\0" + b"t" * 64)
    assert conn.next_event() is None  # text may be up to 64 bytes
    conn.receive_data(b"t")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_fields_at_exactly_the_limit_are_accepted() -> None:
    assert_parses(wire.disconnect("x" * 32), Disconnect("x" * 32))
    assert_parses(wire.send("a", "b", "t" * 64), Send("a", "b", "t" * 64))


def test_op_known_before_request_complete() -> None:
    conn = ServerConnection()
    conn.receive_data(b"CONNECT\0ju")
    assert conn.next_event() is None
    assert conn.op is Connect  # a timeout now answers CONNECT's "other error", 3


@pytest.mark.parametrize(
    ("reply", "data"),
    [
        (Reply(0), b"0\0"),
        (Reply(3), b"3\0"),
        (SendReply(0, 1), b"0\0\x00\x00\x00\x01"),
        (SendReply(0, 0x01020304), b"0\0\x01\x02\x03\x04"),
        (SendReply(2), b"2\0\0\0\0\0"),  # the 4 id bytes follow every SEND reply
        (SendReply(1, 77), b"1\0\0\0\0\0"),
        (ConnectedUsersReply(0, ("juan", "maría")), b"0\x002\0juan\0mar\xc3\xada\0"),
        (ConnectedUsersReply(0, ()), b"0\x000\0"),
        (ConnectedUsersReply(1), b"1\0"),
    ],
)
def test_replies_encode_and_parse_back(reply: Reply, data: bytes) -> None:
    request: Request = {SendReply: Send("a", "b", "c"), ConnectedUsersReply: ConnectedUsers("a")}.get(
        type(reply), Register("n", "a", "d")
    )
    assert ServerConnection().send(reply) == data
    for chunks in splits(data):
        client = ClientConnection()
        client.send(request)
        got = None
        for chunk in chunks:
            client.receive_data(chunk)
            got = got or client.next_event()
        expected = (
            SendReply(reply.code, reply.message_id if reply.code == 0 else 0)
            if isinstance(reply, SendReply)
            else reply
        )
        assert got == expected


def test_client_request_bytes_match_the_contract() -> None:
    client = ClientConnection()
    assert client.send(Register("Juan Perez", "juan123", "01/02/2000")) == wire.register(
        "Juan Perez", "juan123", "01/02/2000"
    )
    assert ClientConnection().send(Connect("juan", 4000)) == wire.connect("juan", 4000)
    with pytest.raises(LocalProtocolError):
        client.send(Unregister("x"))  # one request per connection


def test_client_rejects_truncated_reply() -> None:
    client = ClientConnection()
    client.send(Send("a", "b", "c"))
    client.receive_data(b"0\0\0\0")
    assert client.next_event() is None
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        client.next_event()


@pytest.mark.parametrize(
    ("push", "data"),
    [
        (MessagePush("juan123", 1, "Hola soy Juan"), b"SEND_MESSAGE\0juan123\x001\0Hola soy Juan\0"),
        (ReceiptPush(1), b"SEND_MESS_ACK\x001\0"),
        (ReceiptPush(4294967295), b"SEND_MESS_ACK\x004294967295\0"),
    ],
)
def test_pushes_encode_and_parse_back(push: MessagePush | ReceiptPush, data: bytes) -> None:
    assert encode_push(push) == data
    for chunks in splits(data):
        reader = PushReader()
        got = None
        for chunk in chunks:
            reader.receive_data(chunk)
            got = got or reader.next_event()
        assert got == push


@pytest.mark.parametrize("data", [b"NOPE\0", b"SEND_MESS_ACK\0x\0", b"SEND_MESSAGE\0a\0b\0c\0"])
def test_push_reader_rejects_garbage(data: bytes) -> None:
    reader = PushReader()
    reader.receive_data(data)
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


# -- the result-code table, row by row against classic.md -----------------------------------------------

CONTRACT_ROWS = [
    (Register, AliasTaken(), 1),
    (Register, ValueError(), 2),
    (Unregister, UnknownUser(), 1),
    (Unregister, ValueError(), 2),
    (Connect, UnknownUser(), 1),
    (Connect, AlreadyConnected(), 2),
    (Connect, ValueError(), 3),
    (Disconnect, UnknownUser(), 1),
    (Disconnect, NotConnected(), 2),
    (Disconnect, ValueError(), 3),
    (Send, UnknownUser(), 1),
    (Send, NotConnected(), 2),  # a registered sender who is not connected
    (Send, ValueError(), 2),
    (ConnectedUsers, NotConnected(), 1),
    (ConnectedUsers, UnknownUser(), 2),
    (None, ValueError(), 2),  # unknown operation
]


@pytest.mark.parametrize(("op", "exc", "code"), CONTRACT_ROWS)
def test_result_codes_follow_the_contract(op: type[Request] | None, exc: Exception, code: int) -> None:
    assert code_for(op, exc) == code


@pytest.mark.parametrize("op", REQUESTS)
@pytest.mark.parametrize("exc", [AliasTaken(), UnknownUser(), AlreadyConnected(), NotConnected(), OSError()])
def test_every_operation_and_error_has_a_reply(op: type[Request], exc: Exception) -> None:
    reply = error_reply(op, exc)
    assert 1 <= reply.code <= 3
    assert isinstance(reply, SendReply) == (op is Send)
