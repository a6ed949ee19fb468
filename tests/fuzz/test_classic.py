"""Classic codec, fed random bytes and mutations of valid messages (fields replaced, truncated, split at
every point, NULs inserted). The server side gives exactly one request, or the classic
RemoteProtocolError naming the operation whose "other error" answers it. The client's reply and push
readers give the reply, the push, or that error. Nothing else, whatever the segmentation."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from dmds.bench.fuzz import CLASSIC_MAX_FIELD, CLASSIC_MAX_TEXT, classic_client_oracle, classic_server_oracle
from dmds.protocols.classic import codec, events

server = classic_server_oracle()
server_defaults = classic_server_oracle(256, 65536)
reply_verdict, push_verdict = classic_client_oracle()

# 8 code points are at most 32 UTF-8 bytes, 16 at most 64: within the oracles' small limits.
_char = st.characters(exclude_categories=["Cs"], exclude_characters="\0")
field_text = st.text(_char, max_size=8)
send_text = st.text(_char, max_size=16)
requests = st.one_of(
    st.builds(events.Register, field_text, field_text, field_text),
    st.builds(events.Unregister, field_text),
    st.builds(events.Connect, field_text, st.integers(1, 65535)),
    st.builds(events.Disconnect, field_text),
    st.builds(events.Send, field_text, field_text, send_text),
    st.builds(events.ConnectedUsers, field_text),
)
no_nul = st.binary(max_size=80).map(lambda b: b.replace(b"\0", b""))


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@settings(max_examples=150, deadline=None)
@given(requests, st.binary(max_size=8))
def test_valid_request_split_at_every_point(request: events.Request, tail: bytes) -> None:
    data = codec.encode_request(request)
    for i in range(len(data) + 1):
        assert server([data[:i], data[i:]]) == request
    assert server(_bytewise(data)) == request
    # One request per connection: what follows it is not read.
    assert server([data + tail]) == request


@settings(max_examples=150, deadline=None)
@given(requests)
def test_truncated_request_is_an_error_naming_its_operation(request: events.Request) -> None:
    data = codec.encode_request(request)
    for i in range(len(data)):
        # The operation is known once its name and NUL have arrived.
        expected = type(request) if i > len(request.OP) else None
        assert server([data[:i]]) == ("error", expected), data[:i]


@settings(max_examples=300, deadline=None)
@given(requests, st.data(), no_nul)
def test_field_replaced_by_any_bytes(request: events.Request, data: st.DataObject, raw: bytes) -> None:
    cls = type(request)
    names = [f.name for f in dataclasses.fields(request)]
    index = data.draw(st.integers(0, len(names) - 1))
    fields = [str(getattr(request, n)).encode() for n in names]
    fields[index] = raw
    wire = cls.OP + b"\0" + b"".join(f + b"\0" for f in fields)
    limit = CLASSIC_MAX_TEXT if cls is events.Send and names[index] == "text" else CLASSIC_MAX_FIELD
    expected: object
    if len(raw) > limit:
        expected = ("error", cls)
    elif cls is events.Connect and names[index] == "listen_port":
        number = raw.isdigit() and raw.isascii() and len(raw) <= 10 and 1 <= int(raw) <= 65535
        assert isinstance(request, events.Connect)
        expected = events.Connect(request.alias, int(raw)) if number else ("error", cls)
    else:
        try:
            expected = dataclasses.replace(request, **{names[index]: raw.decode()})
        except UnicodeDecodeError:
            expected = ("error", cls)
    assert server([wire]) == expected
    assert server(_bytewise(wire)) == expected


@settings(max_examples=200, deadline=None)
@given(requests, st.data())
def test_nul_inserted_anywhere(request: events.Request, data: st.DataObject) -> None:
    wire = codec.encode_request(request)
    at = data.draw(st.integers(0, len(wire)))
    mutated = wire[:at] + b"\0" + wire[at:]
    verdict = server([mutated])
    assert server(_bytewise(mutated)) == verdict
    if at == 0:
        assert verdict == ("error", None)  # an empty operation name


requestish = st.builds(
    lambda op, parts, tail: op + b"\0" + b"\0".join(parts) + tail,
    st.sampled_from([*codec.FIELDS, b"SEND_MESSAGE", b"", b"CONNECTED"]),
    st.lists(st.binary(max_size=70), max_size=5),
    st.binary(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(requestish | st.binary(max_size=300), st.integers(1, 9))
def test_random_bytes_in_any_segmentation(data: bytes, size: int) -> None:
    for verdict in (server, server_defaults):
        whole = verdict([data])
        assert verdict(_bytewise(data)) == whole
        assert verdict([data[i : i + size] for i in range(0, len(data), size)]) == whole


replies = st.one_of(
    st.builds(
        lambda c, i: (0, codec.encode_reply(events.SendReply(c, i))),
        st.integers(0, 255),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        lambda a: (1, codec.encode_reply(events.ConnectedUsersReply(0, tuple(a)))),
        st.lists(field_text, max_size=4),
    ),
    st.builds(lambda c: (1, codec.encode_reply(events.ConnectedUsersReply(c))), st.integers(1, 255)),
    st.builds(lambda c: (2, codec.encode_reply(events.Reply(c))), st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None)
@given(replies)
def test_reply_split_anywhere_or_truncated(reply: tuple[int, bytes]) -> None:
    kind, data = reply
    whole = reply_verdict(kind, [data])
    assert isinstance(whole, events.Reply)
    for i in range(len(data)):
        assert reply_verdict(kind, [data[:i], data[i:]]) == whole
        assert isinstance(reply_verdict(kind, [data[:i]]), tuple)  # truncated: an error


pushes = st.one_of(
    st.builds(events.MessagePush, field_text, st.integers(0, 2**32 - 1), send_text),
    st.builds(events.ReceiptPush, st.integers(0, 2**32 - 1)),
)


@settings(max_examples=150, deadline=None)
@given(pushes)
def test_push_split_anywhere_or_truncated(push: events.Push) -> None:
    data = codec.encode_push(push)
    for i in range(len(data)):
        assert push_verdict([data[:i], data[i:]]) == push
        assert push_verdict([data[:i]]) == ("error", None)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2), st.binary(max_size=200) | requestish, st.integers(1, 5))
def test_client_readers_on_random_bytes(kind: int, data: bytes, size: int) -> None:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    assert reply_verdict(kind, pieces) == reply_verdict(kind, [data])
    assert push_verdict(pieces) == push_verdict([data])
