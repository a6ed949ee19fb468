"""SOAP text normaliser, in process: `normalise_text` on any text, and the WSGI application (exactly as
`make_server` serves it) on valid envelopes, mutated envelopes, entity tricks, huge text, invalid UTF-8,
random bytes and headers. Allowed: a 200 with the normalised text, or a SOAP Fault blaming the client;
never an exception out of the app, a Server fault or an error logged by soapbar (the oracle in
dmds.bench.fuzz checks that). No entity is expanded and nothing is fetched. The zeep client, driven
through the same app, returns the normalised text or raises NormaliserUnavailable, nothing else."""

from __future__ import annotations

import functools
import io
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import pytest
import requests
import zeep
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from dmds.bench.fuzz import SoapOracle
from dmds.soap import service
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

oracle = SoapOracle()
normalise_text = service.normalise_text

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
TNS = "http://tests.python-zeep.org/"
CT11 = "text/xml; charset=utf-8"
CT12 = "application/soap+xml; charset=utf-8"

# What XML 1.0 can carry (the parser turns \r into \n: whitespace either way).
_XML_ILLEGAL = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe", "\uffff"]
xml_char = st.characters(exclude_categories=["Cs"], exclude_characters=_XML_ILLEGAL)
_SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u3000\u200b"
spacey = st.text(st.sampled_from([*_SPACES, "a", "b", "ñ"]), max_size=30)
xml_text = st.text(xml_char, max_size=60) | spacey.filter(lambda t: not any(c in _XML_ILLEGAL for c in t))


def envelope(
    inner: str,
    *,
    soap12: bool = False,
    prefix: str = "soap",
    declaration: bool = True,
    header: str = "",
    doctype: str = "",
    default_ns: bool = False,
) -> bytes:
    """A modify_text request whose <text> element holds `inner` (already XML)."""
    ns = SOAP12 if soap12 else SOAP11
    call = (
        f'<modify_text xmlns="{TNS}"><text>{inner}</text></modify_text>'
        if default_ns
        else f'<t:modify_text xmlns:t="{TNS}"><t:text>{inner}</t:text></t:modify_text>'
    )
    head = '<?xml version="1.0" encoding="utf-8"?>' if declaration else ""
    return (
        f'{head}{doctype}<{prefix}:Envelope xmlns:{prefix}="{ns}"><{prefix}:Header>{header}</{prefix}:Header>'
        f"<{prefix}:Body>{call}</{prefix}:Body></{prefix}:Envelope>"
    ).encode()


def _as_xml(text: str, how: str) -> str:
    if how == "cdata":
        return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    if how == "charrefs":
        return "".join(f"&#x{ord(c):x};" for c in text)
    return escape(text)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=())) | spacey)
def test_normalise_text_on_any_text(text: str) -> None:
    assert oracle.text(text) == " ".join(text.split())
    assert oracle.text(oracle.text(text)) == oracle.text(text)


@settings(max_examples=150, deadline=None)
@given(
    text=xml_text,
    how=st.sampled_from(["escape", "cdata", "charrefs"]),
    soap12=st.booleans(),
    prefix=st.sampled_from(["soap", "s", "env"]),
    declaration=st.booleans(),
    default_ns=st.booleans(),
    json=st.booleans(),
)
def test_valid_envelope_answers_its_text_normalised(
    text: str, how: str, soap12: bool, prefix: str, declaration: bool, default_ns: bool, json: bool
) -> None:
    body = envelope(
        _as_xml(text, how), soap12=soap12, prefix=prefix, declaration=declaration, default_ns=default_ns
    )
    answer = oracle.request(
        body, content_type=CT12 if soap12 else CT11, accept="application/json" if json else ""
    )
    assert (answer.status, answer.result) == (200, normalise_text(text))


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    at = st.integers(0, len(data))
    junk = st.sampled_from(
        [b"<", b">", b"&", b"&amp", b"]]>", b"<!--", b"\0", b"\xff", b"\xc3", b'"', b"</x>", b"<x>"]
    )
    return st.one_of(
        st.builds(
            lambda a, m: data[:a] + bytes([data[a % len(data)] ^ m]) + data[a + 1 :], at, st.integers(1, 255)
        ),
        st.builds(lambda a, b: data[: min(a, b)] + data[max(a, b) :], at, at),
        st.builds(lambda a, j: data[:a] + j + data[a:], at, junk | st.binary(min_size=1, max_size=6)),
        st.builds(lambda a, b: data[:a] + data[min(a, b) : max(a, b)] + data[a:], at, at),
        st.builds(lambda a: data[:a], at),
        st.builds(
            lambda a, b: data.replace(b"modify_text", a).replace(b"Envelope", b),
            st.binary(max_size=12),
            st.binary(max_size=9),
        ),
    )


@settings(max_examples=250, deadline=None)
@given(
    data=st.data(),
    text=xml_text,
    soap12=st.booleans(),
    header=st.sampled_from(
        [
            "",
            '<h:x xmlns:h="urn:h" soap:mustUnderstand="1">1</h:x>',
            '<wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:m</wsa:MessageID>'
            '<wsa:FaultTo xmlns:wsa="http://www.w3.org/2005/08/addressing"><wsa:Address>http://x/</wsa:Address>'
            "</wsa:FaultTo>",
        ]
    ),
    content_type=st.sampled_from(
        [CT11, CT12, "", "text/plain", 'multipart/related; type="application/xop+xml"']
    ),
    accept=st.sampled_from(["", "application/json", "text/xml"]),
)
def test_mutated_envelope_answers_a_result_or_a_client_fault(
    data: st.DataObject, text: str, soap12: bool, header: str, content_type: str, accept: str
) -> None:
    body = data.draw(_mutated(envelope(escape(text), soap12=soap12, header=header)))
    answer = oracle.request(body, content_type=content_type or None, accept=accept)
    assert answer.result is not None or answer.fault is not None


@settings(max_examples=100, deadline=None)
@given(
    text=xml_text,
    bad=st.sampled_from(
        [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xef\xbf\xbe"]
    ),
)
def test_invalid_utf8_is_a_client_fault(text: str, bad: bytes) -> None:
    inner = escape(text).encode()
    body = envelope("@@").replace(b"@@", inner + bad + inner)
    assert oracle.request(body).fault == "Client"


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(101, 3000), inner=st.booleans())
def test_deep_nesting_is_a_client_fault(depth: int, inner: bool) -> None:
    nested = "<x>" * depth + "a" + "</x>" * depth
    body = envelope(nested) if inner else (nested.encode())
    assert oracle.request(body).fault == "Client"


def test_huge_text() -> None:
    text = "  ñ" * 700_000 + " end "  # 2.8 MB of UTF-8
    assert oracle.request(envelope(text)).result == normalise_text(text)
    # A text node over libxml2's 10 MB limit, in a body under soapbar's 10 MiB one: a client fault.
    assert oracle.request(envelope("a " * 5_100_000)).fault == "Client"
    too_big = envelope("a" * (10 * 1024 * 1024))
    assert oracle.request(too_big).fault == "Client"
    # Without Content-Length the body is empty (as make_server serves it): a fault, not a hang.
    assert oracle.request(envelope("a"), content_length=False).fault == "Client"


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [CT11, CT12, "", 'multipart/related; type="application/xop+xml"; boundary=b']
    ),
    action=st.sampled_from(['"modify_text"', "", "x", None]),
    accept=st.sampled_from(["", "application/json"]),
    content_length=st.booleans(),
)
def test_random_bytes_and_headers(
    body: bytes, content_type: str, action: str | None, accept: str, content_length: bool
) -> None:
    answer = oracle.request(
        body,
        content_type=content_type or None,
        soap_action=action,
        accept=accept,
        content_length=content_length,
    )
    assert answer.fault is not None or answer.result is not None


@settings(max_examples=60, deadline=None)
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "PATCH", "X"]), query=st.text(max_size=20))
def test_other_methods_and_queries(method: str, query: str) -> None:
    for q in (query, "wsdl", "wsdl=" + query):
        answer = oracle.request(b"", method=method, query=q)
        if method == "GET" and "wsdl" in q.lower():
            assert answer.status in (200, 404)
        else:
            assert answer.status == 405


@pytest.mark.parametrize("framed", [True, False])
def test_regression_malformed_mtom_body_is_a_client_fault(framed: bool) -> None:
    """soapbar decodes an MTOM body outside its fault handling: a malformed one (no boundary, or a
    first part that is not XML) raised out of the app, and wsgiref answered a bare text/plain 500 and
    printed a traceback per request."""
    content_type = (
        'multipart/related; type="application/xop+xml"; boundary="b"; start-info="text/xml"'
        if framed
        else "multipart/related; type=application/xop+xml"
    )
    for body in (b">d", b"", envelope("x")[:40], b"--b\r\n\r\nnot xml\r\n--b--\r\n"):
        answer = oracle.request(body, content_type=content_type)
        assert answer.fault == "Client", answer
    soap12 = oracle.request(
        b">d", content_type="multipart/related; type=application/xop+xml; start-info=soap+xml"
    )
    assert (soap12.status, soap12.fault) == (400, "Sender")


# -- entity tricks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bait(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Files and a listening socket that an expanding or fetching parser would reach."""
    root = tmp_path_factory.mktemp("bait")
    secret = root / "secret.txt"
    secret.write_text("FETCHED-FILE")
    dtd = root / "evil.dtd"
    dtd.write_text('<!ENTITY leak "FETCHED-DTD">')
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield {
            "file": secret.as_uri(),
            "dtd": dtd.as_uri(),
            "http": f"http://127.0.0.1:{listener.getsockname()[1]}/x",
            "listener": listener,
        }


def _tricks(bait: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """name: (DOCTYPE, text content that uses it)."""
    laughs = '<!ENTITY l0 "LAUGH">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "billion laughs": (f"<!DOCTYPE e [{laughs}]>", "&l9;"),
        "quadratic blowup": (f'<!DOCTYPE e [<!ENTITY q "{"QUAD" * 25000}">]>', "&q;" * 400),
        "external file": (f'<!DOCTYPE e [<!ENTITY x SYSTEM "{bait["file"]}">]>', "&x;"),
        "external http": (f'<!DOCTYPE e [<!ENTITY x SYSTEM "{bait["http"]}">]>', "&x;"),
        "parameter entity": (f'<!DOCTYPE e [<!ENTITY % p SYSTEM "{bait["dtd"]}"> %p;]>', "&leak;"),
        "external dtd": (f'<!DOCTYPE e SYSTEM "{bait["http"]}">', "&leak;"),
        "external dtd file": (f'<!DOCTYPE e SYSTEM "{bait["dtd"]}">', "&leak;"),
        "xinclude": (
            "",
            f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{bait["file"]}" parse="text"/>',
        ),
    }


TRICKS = [
    "billion laughs",
    "quadratic blowup",
    "external file",
    "external http",
    "parameter entity",
    "external dtd",
    "external dtd file",
    "xinclude",
]


@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize("soap12", [False, True])
def test_entities_are_neither_expanded_nor_fetched(bait: dict[str, Any], trick: str, soap12: bool) -> None:
    doctype, use = _tricks(bait)[trick]
    started = time.monotonic()
    for body in (
        envelope(f"a {use} b", doctype=doctype, soap12=soap12),
        envelope("a", doctype=doctype, soap12=soap12, header=f'<h:x xmlns:h="urn:h" a="{use}">{use}</h:x>'),
    ):
        answer = oracle.request(body, content_type=CT12 if soap12 else CT11)
        assert answer.result is not None or answer.fault is not None
        for marker in (b"LAUGH", b"QUAD", b"FETCHED"):
            assert marker not in answer.body
        if answer.result is not None:
            assert answer.result in ("a b", "a")  # the reference is dropped, not replaced
    assert time.monotonic() - started < 5
    with pytest.raises(BlockingIOError):  # nobody connected to the bait listener
        bait["listener"].accept()


# -- the zeep client, through the same app -------------------------------------------------------------


class _InProcess(requests.adapters.BaseAdapter):
    """A requests adapter that answers from a WSGI app, without sockets."""

    def __init__(self, app: Callable[..., Any]) -> None:
        super().__init__()
        self._app = app

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        body = request.body or b""
        data = body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method or "GET",
            "PATH_INFO": url.path or "/",
            "QUERY_STRING": url.query,
            "SERVER_NAME": url.hostname or "",
            "SERVER_PORT": str(url.port or 80),
            "wsgi.input": io.BytesIO(data),
            "CONTENT_LENGTH": str(len(data)),
        }
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
        started: list[tuple[str, list[tuple[str, str]]]] = []
        out = b"".join(
            self._app(environ, lambda status, headers, exc=None: started.append((status, headers)))
        )
        response = requests.Response()
        response.status_code = int(started[0][0].split()[0])
        response.headers = CaseInsensitiveDict(dict(started[0][1]))
        response._content = out
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def normaliser() -> Iterator[Normaliser]:
    session = requests.Session()
    session.mount("http://", _InProcess(service._empty_body_without_length(service.build_app())))
    with pytest.MonkeyPatch.context() as patch:
        # Normaliser builds its zeep transport itself: give every one the in-process session.
        patch.setattr(zeep, "Transport", functools.partial(zeep.Transport, session=session))
        yield Normaliser("http://127.0.0.1:5000/?wsdl")


_CARRIABLE = str.maketrans({c: None for c in _XML_ILLEGAL if c not in "\x0b\x0c\x1c\x1d\x1e\x1f"})


@settings(max_examples=120, deadline=None)
@given(text=st.text(st.characters(exclude_categories=()), max_size=40) | spacey | xml_text)
def test_normaliser_client_answers_the_normalised_text_or_unavailable(
    normaliser: Normaliser, text: str
) -> None:
    carriable = not any(0xD800 <= ord(c) <= 0xDFFF for c in text) and text.translate(_CARRIABLE) == text
    if carriable:
        assert normaliser.normalise(text) == normalise_text(text)
    else:
        with pytest.raises(NormaliserUnavailable):
            normaliser.normalise(text)
