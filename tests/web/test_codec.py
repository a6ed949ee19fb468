"""The browser's codec (web/src/codec.js, run by Node) against the Python codec's bytes."""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path
from typing import Any

import msgspec

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode

WEB = Path(__file__).resolve().parents[2] / "web"

# Every client frame with every field away from its default, so that the JS side must write each
# field, in order; floats are not whole numbers (JS writes whole ones as integers).
CLIENT: list[f.Frame] = [
    f.Hello(version=1, client="web 1.0", features=["typing"]),
    f.Typing(to="maría"),
    f.Ping(n=7),
    f.Pong(n=8),
    f.Register(id=1, alias="juan", full_name="Juan Pérez", birth_date="01/02/2000", password="pw"),
    f.Login(id=2, alias="juan", password="secret", token="tok"),
    f.Login(id=3, token="resume"),
    f.Logout(id=4),
    f.ChangePassword(id=5, old_password="a", new_password="b"),
    f.DeleteAccount(id=6, password="pw"),
    f.Send(id=7, to="maría", key="k-1", text="¡hola! <b>", attachment=9),
    f.Send(id=8, to="maria", key="k-2", text=""),
    f.Ack(message_ids=[1, 2, 2**40]),
    f.MarkRead(message_ids=[3]),
    f.Subscribe(id=9),
    f.History(id=10, peer="maria", before=1733400000.25, limit=20),
    f.History(id=11, peer="maria"),
    f.UploadStart(id=12, name="a.png", media_type="image/png", size=70000),
    f.UploadChunk(id=13, upload=4, offset=65536, data=b"\x00\xff" * 40),
    f.Fetch(id=14, attachment=4, offset=10, length=100),
]

ATTACHMENT = f.Attachment(attachment_id=4, name="a.png", media_type="image/png", size=3)
SERVER: list[f.Frame] = [
    f.Welcome(
        version=1,
        server="dmds",
        heartbeat_s=20.5,
        idle_timeout_s=60.5,
        max_frame_bytes=1 << 20,
        max_text_bytes=4096,
        max_attachment_bytes=1 << 24,
    ),
    f.Ping(),
    f.Pong(n=3),
    f.Error(code=ErrorCode.UNKNOWN_USER, message="no such user", re=7),
    f.Error(code=ErrorCode.RATE_LIMITED, retry_after_s=1.5),
    f.Ok(re=2),
    f.LoggedIn(re=2, alias="juan", token="t" * 43, expires_at=1733400000.5),
    f.Accepted(re=7, to="maria", key="k-1", message_id=12),
    f.Message(sender="maria", message_id=2**53, text="hola", sent_at=1733400000.125),
    f.Message(sender="maria", message_id=3, text="", sent_at=1.5, attachment=ATTACHMENT),
    f.Messages(
        messages=[
            f.Message(sender="maria", message_id=4, text="uno", sent_at=2.5),
            f.Message(sender="ana", message_id=5, text="", sent_at=3.5, attachment=ATTACHMENT),
        ]
    ),
    f.Delivered(to="maria", message_id=12, key="k-1"),
    f.Delivered(to="maria", message_id=15, key="k-4", first=12),
    f.Read(to="maria", message_id=12),
    f.Presence(re=9, online=["juan", "maria"]),
    f.PresenceChanged(alias="maria", online=False),
    f.TypingFrom(sender="maria"),
    f.GoAway(reason="server stopping"),
    f.GoAway(),
    f.HistoryPage(
        re=10,
        entries=[
            f.HistoryEntry(sender="juan", recipient="maria", message_id=1, text="a", sent_at=1.5),
            f.HistoryEntry(
                sender="maria",
                recipient="juan",
                message_id=2,
                text="b",
                sent_at=2.5,
                delivered_at=3.5,
                read_at=4.5,
                attachment=ATTACHMENT,
            ),
        ],
        more=True,
    ),
    f.UploadReady(re=12, upload=4, offset=0),
    f.UploadReady(re=13, upload=4, offset=70000, attachment=4),
    f.Chunk(re=14, attachment=4, offset=10, data=b"\x01\x02", size=3),
]

GARBAGE = [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1t\x01", b"\xa5hello"]


def _json(value: Any) -> Any:
    """A frame as the JSON the JS test compares with: bytes as {"$bytes": hex}, every field."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, msgspec.Struct):
        out = {"t": value.__struct_config__.tag} if isinstance(value, f.Frame) else {}
        for name in value.__struct_fields__:
            out[name] = _json(getattr(value, name))
        return out
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, ErrorCode):
        return int(value)
    return value


def _client_json(frame: f.Frame, with_defaults: bool) -> dict[str, Any]:
    """A client frame as an app writes it: with its defaults spelt out, or left to the codec."""
    fields = frame.__struct_fields__
    given = {name: getattr(frame, name) for name in fields}
    if not with_defaults:
        required = len(fields) - len(frame.__struct_defaults__)
        optional = dict(zip(fields[required:], frame.__struct_defaults__, strict=True))
        given = {k: v for k, v in given.items() if k not in optional or optional[k] != v}
    return {"t": frame.__struct_config__.tag} | {k: _json(v) for k, v in given.items()}


def test_the_browser_codec_writes_and_reads_the_python_bytes(tmp_path: Path) -> None:
    assert (WEB / "node_modules").is_dir(), "run `make web` (npm ci in web/) first"
    encoder = msgspec.msgpack.Encoder()
    tags = [t.__struct_config__.tag for t in typing.get_args(f.ClientFrame)]
    fixtures = {
        "client": [
            {"frame": _client_json(x, with_defaults), "bytes": encoder.encode(x).hex()}
            for x in CLIENT
            for with_defaults in (True, False)
        ],
        "server": [{"frame": _json(x), "bytes": encoder.encode(x).hex()} for x in SERVER],
        "client_tags": tags,
        "garbage": [g.hex() for g in GARBAGE],
        "error_codes": {code.name: int(code) for code in ErrorCode},
        "version": f.VERSION,
    }
    assert {x.__struct_config__.tag for x in CLIENT} == set(tags)
    assert {x.__struct_config__.tag for x in SERVER} == {
        t.__struct_config__.tag for t in typing.get_args(f.ServerFrame)
    }
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps(fixtures))
    done = subprocess.run(
        ["node", "test/codec_fixtures.mjs", str(path)],
        check=False,
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{2 * len(CLIENT)} client and {len(SERVER)} server frames checked" in done.stdout
