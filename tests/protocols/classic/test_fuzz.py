"""Any bytes, fed whole or byte by byte, give a request or RemoteProtocolError, nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dmds.protocols.classic import (
    ClientConnection,
    ConnectedUsers,
    PushReader,
    RemoteProtocolError,
    Send,
    ServerConnection,
)
from dmds.protocols.classic.codec import FIELDS

ops = st.sampled_from([*FIELDS, b"SEND_MESSAGE", b"", b"X"])
field_bytes = st.binary(max_size=40) | st.text(max_size=20).map(str.encode)
requestish = st.builds(
    lambda op, parts, tail: op + b"\0" + b"\0".join(parts) + tail,
    ops,
    st.lists(field_bytes, max_size=5),
    st.binary(max_size=3),
)
inputs = requestish | st.binary(max_size=200)


def _server(chunks: list[bytes]) -> object:
    conn = ServerConnection(max_field_bytes=32, max_text_bytes=64)
    result = None
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            result = result or conn.next_event()
    except RemoteProtocolError as exc:
        return ("error", exc.op)
    return result


@settings(max_examples=400, deadline=None)
@given(inputs)
def test_server_codec_total_and_segmentation_independent(data: bytes) -> None:
    whole = _server([data])
    assert _server([data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=300, deadline=None)
@given(inputs)
def test_client_and_push_readers_never_raise_anything_else(data: bytes) -> None:
    for request in (Send("a", "b", "c"), ConnectedUsers("a")):
        client = ClientConnection()
        client.send(request)
        try:
            client.receive_data(data)
            client.receive_data(b"")
            client.next_event()
        except RemoteProtocolError:
            pass
    reader = PushReader()
    try:
        reader.receive_data(data)
        reader.receive_data(b"")
        reader.next_event()
    except RemoteProtocolError:
        pass
