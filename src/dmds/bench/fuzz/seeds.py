"""Seed corpora and libFuzzer dictionaries: valid inputs of each target, and the words of its grammar."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from dmds.bench.fuzz.rule import SELF_CHECK
from dmds.bench.fuzz.session import welcome

if TYPE_CHECKING:
    from dmds.protocols.session.frames import Frame


def _soap_envelope(text: str, *, soap12: bool = False, header: str = "", doctype: str = "") -> bytes:
    ns = "http://www.w3.org/2003/05/soap-envelope" if soap12 else "http://schemas.xmlsoap.org/soap/envelope/"
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}<soap:Envelope xmlns:soap="{ns}" '
        f'xmlns:tns="http://tests.python-zeep.org/"><soap:Header>{header}</soap:Header><soap:Body>'
        f"<tns:modify_text><tns:text>{text}</tns:text></tns:modify_text></soap:Body></soap:Envelope>"
    ).encode()


def seed_corpus(target: str) -> list[bytes]:
    """Valid inputs of `target`, with their control byte, for the fuzzer to mutate."""
    if target == "classic-server":
        return _classic_server_seeds()
    if target == "classic-client":
        return _classic_client_seeds()
    if target in ("session-server", "session-client"):
        return _session_seeds(target)
    if target == "soap":
        return _soap_seeds()
    if target == SELF_CHECK:
        return [b"bu"]
    raise ValueError(f"unknown target {target!r}")


def _classic_server_seeds() -> list[bytes]:
    from dmds.protocols.classic import codec, events  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

    requests: list[events.Request] = [
        events.Register("Juan Perez", "juan123", "01/02/2000"),
        events.Unregister("juan123"),
        events.Connect("juan123", 40001),
        events.Disconnect("juan123"),
        events.Send("juan123", "maria123", "Hola soy Juan"),
        events.Send("j", "m", "ñandú ☃ \U0001f600"),
        events.ConnectedUsers("juan123"),
    ]
    encoded = [codec.encode_request(r) for r in requests]
    return [bytes([ctrl]) + e for e in encoded for ctrl in (0, 3, 0x80)] + [b"\0" + encoded[0][:12]]


def _classic_client_seeds() -> list[bytes]:
    replies = [
        (0, b"0\0\0\0\0\x07"),
        (0, b"2\0\0\0\0\0"),
        (1, b"0\0" + b"2\0juan123\0maria123\0"),
        (1, b"1\0"),
        (2, b"0\0"),
        (2, b"SEND_MESSAGE\0juan123\x007\0Hola soy Juan\0"),
        (2, b"SEND_MESS_ACK\x007\0"),
    ]
    return [bytes([kind | piece << 2]) + r for kind, r in replies for piece in (0, 1)]


def _session_frames(target: str) -> tuple[Frame, list[Frame]]:
    """The handshake frame of the peer of `target`, and a sequence of the frames it sends."""
    from dmds.protocols.session import frames as f  # noqa: PLC0415 - imported late: see dmds.bench.fuzz
    from dmds.protocols.session.codes import ErrorCode  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

    sequence: list[f.Frame]
    if target == "session-server":
        sequence = [
            f.Login(id=1, alias="juan", password="secret password"),  # noqa: S106 - seed data
            f.Send(id=2, to="maria", key="k1", text="Hola, soy Juan"),
            f.Ack(message_ids=[1, 2]),
            f.MarkRead(message_ids=[1]),
            f.Ping(n=3),
            f.History(id=3, peer="maria", before=1.5, limit=10),
            f.UploadStart(id=4, name="a.txt", media_type="text/plain", size=3),
            f.UploadChunk(id=5, upload=1, offset=0, data=b"abc"),
            f.Fetch(id=6, attachment=1),
            f.Register(id=7, alias="x", full_name="X", birth_date="01/01/2000", password="12345678"),  # noqa: S106
        ]
        hello: f.Frame = f.Hello(version=1, client="fuzz")
    else:
        attachment = f.Attachment(attachment_id=1, name="a.txt", media_type="text/plain", size=3)
        sequence = [
            f.LoggedIn(re=1, alias="juan", token="t" * 43, expires_at=1.8e9),
            f.Accepted(re=2, to="maria", key="k1", message_id=1),
            f.Message(sender="maria", message_id=1, text="hola", sent_at=1.7e9, attachment=attachment),
            f.Delivered(to="maria", message_id=1, key="k1"),
            f.Error(code=ErrorCode.NOT_LOGGED_IN, message="log in", re=3),
            f.HistoryPage(
                re=4,
                entries=[f.HistoryEntry(sender="a", recipient="b", message_id=1, text="t", sent_at=1.0)],
                more=False,
            ),
            f.Chunk(re=5, attachment=1, offset=0, data=b"abc", size=3),
            f.PresenceChanged(alias="maria", online=True),
        ]
        hello = welcome(1)
    return hello, sequence


def _framed(items: Sequence[Frame]) -> bytes:
    out = b""
    for item in items:
        payload = msgspec.msgpack.encode(item)
        out += len(payload).to_bytes(4, "big") + payload
    return out


def _session_seeds(target: str) -> list[bytes]:
    hello, sequence = _session_frames(target)
    whole = _framed(sequence)
    seeds = [bytes([ctrl]) + whole for ctrl in (0, 2, 8, 0x18)]
    seeds += [b"\1" + _framed([hello, *sequence[:2]]), b"\0" + _framed([sequence[0]])]
    return seeds + [b"\0" + _framed([item]) for item in sequence]


def _soap_seeds() -> list[bytes]:
    laughs = '<!DOCTYPE e [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;">]>'
    external = '<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    wsa = (
        '<wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:1</wsa:MessageID>'
        '<wsa:ReplyTo xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>http://x/'
        "</wsa:Address></wsa:ReplyTo>"
    )
    must = '<h:x xmlns:h="urn:h" soap:mustUnderstand="1">1</h:x>'
    return [
        b"\0" + _soap_envelope("  Hola ,   soy\tJuan  "),
        b"\1" + _soap_envelope("a  b", soap12=True),
        b"\x10" + _soap_envelope("a  b"),
        b"\x80" + _soap_envelope("a"),
        b"\0" + _soap_envelope("&c;", doctype=laughs),
        b"\0" + _soap_envelope("&x;", doctype=external),
        b"\0" + _soap_envelope("x", header=wsa),
        b"\1" + _soap_envelope("x", soap12=True, header=must),
        b"\0" + _soap_envelope("<![CDATA[ a <b> ]]>&#x20;&amp;"),
        b"\x40wsdl",
    ]


def _dictionary(target: str) -> list[bytes]:
    """Tokens that libFuzzer splices into inputs: the grammar's words."""
    if target.startswith("classic"):
        return [
            b"\0",
            *(b"REGISTER", b"UNREGISTER", b"CONNECT", b"DISCONNECT", b"SEND", b"CONNECTEDUSERS"),
            *(b"SEND_MESSAGE", b"SEND_MESS_ACK", b"65535", b"4294967295", b"\xc3\xb1"),
        ]
    if target.startswith("session"):
        from dmds.protocols.session import frames  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

        words = {"t", "id", "re", "version", "message_ids", "text", "data", "entries", "attachment"}
        for union in (frames.ClientFrame, frames.ServerFrame):
            for cls in typing.get_args(union):
                words.add(cls.__struct_config__.tag)
                words.update(cls.__struct_fields__)
        tokens = [msgspec.msgpack.encode(w) for w in sorted(words)]
        return [
            *tokens,
            b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\xd3\x80\0\0\0\0\0\0\0",
            b"\xdd\xff\xff\xff\xff",
        ]
    if target == "soap":
        return [
            b"<soap:Envelope",
            b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"',
            b"http://www.w3.org/2003/05/soap-envelope",
            b"http://tests.python-zeep.org/",
            b"http://www.w3.org/2005/08/addressing",
            b"<soap:Body>",
            b"<soap:Header>",
            b"modify_text",
            b"<tns:text>",
            b'mustUnderstand="1"',
            b"<!DOCTYPE",
            b"<!ENTITY",
            b"SYSTEM",
            b"<![CDATA[",
            b"&#x",
            b'encoding="',
        ]
    return [b"g"]


def _dict_line(index: int, token: bytes) -> str:
    escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)
    return f'kw{index}="{escaped}"\n'


def write_inputs(target: str, directory: Path) -> tuple[Path, Path]:
    """Write the seed corpus and the dictionary of `target` under `directory`."""
    corpus = directory / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seed_corpus(target)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    tokens = directory / "tokens.dict"
    tokens.write_text("".join(_dict_line(i, t) for i, t in enumerate(_dictionary(target))))
    return corpus, tokens
