"""Tests of the SOAP text normaliser: the pure function, the soapbar service and the zeep client.

Integration tests run the real service on a real socket: in a thread for most
tests, and as a subprocess (``run_ws``) for start-up logging and clean shutdown.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as make_wsgi_server

import pytest
import zeep
from lxml import etree
from soapbar import SoapApplication, SoapFault, SoapService, WsgiSoapApp, soap_operation

from dmds.soap.normaliser import DEFAULT_WSDL_URL, Normaliser, NormaliserUnavailable
from dmds.soap.service import SoapServer, make_server, normalise_text

TNS = "http://tests.python-zeep.org/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP11_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SRC_DIR = Path(__file__).resolve().parents[2] / "src"


# --- normalise_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  hola   que\ttal \n", "hola que tal"),
        ("a\tb\t\tc", "a b c"),
        ("line one\nline two\r\n\nline three", "line one line two line three"),
        ("a\u00a0b\u2003c\u3000d\u2028e\x85f", "a b c d e f"),
        ("a\x0b\x0cb\x1c\x1d\x1e\x1fc", "a b c"),
        ("", ""),
        ("     ", ""),
        (" \t\n\r\u00a0 ", ""),
        ("already normal", "already normal"),
        ("día ñandú 日本", "día ñandú 日本"),
    ],
)
def test_normalise_text(text: str, expected: str) -> None:
    assert normalise_text(text) == expected


def test_normalise_text_keeps_zero_width_space() -> None:
    # U+200B is not whitespace for str.split, so it is not collapsed.
    assert normalise_text(" a\u200bb ") == "a\u200bb"


def test_normalise_text_is_idempotent() -> None:
    once = normalise_text(" x \t y\n\nz ")
    assert normalise_text(once) == once


# --- fixtures ----------------------------------------------------------------------------------


def _serve_in_thread(server: WSGIServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def server() -> Iterator[SoapServer]:
    srv = make_server("127.0.0.1", 0)
    thread = _serve_in_thread(srv)
    yield srv
    srv.shutdown()
    thread.join(timeout=5)
    srv.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _fault_string(body: bytes) -> str:
    root = etree.fromstring(body)
    fault = root.find(f"{{{SOAP11_ENV_NS}}}Body/{{{SOAP11_ENV_NS}}}Fault")
    assert fault is not None, body
    return fault.findtext("faultstring") or ""


# --- service -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_make_server_binds_port_zero_and_advertises_it(server: SoapServer) -> None:
    assert server.port > 0
    assert server.wsdl_url == f"http://127.0.0.1:{server.port}/?wsdl"


@pytest.mark.timeout(30)
def test_wsdl_contract(server: SoapServer) -> None:
    with urllib.request.urlopen(server.wsdl_url, timeout=5) as response:
        assert response.status == 200
        root = etree.fromstring(response.read())

    assert root.tag == f"{{{WSDL_NS}}}definitions"
    assert root.get("targetNamespace") == TNS
    operations = root.findall(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation")
    assert [op.get("name") for op in operations] == ["modify_text"]
    # SOAP 1.1, document/literal, as spyne's Soap11 in/out protocol published.
    soap_binding = root.find(f"{{{WSDL_NS}}}binding/{{{WSDL_SOAP11_NS}}}binding")
    assert soap_binding is not None
    assert soap_binding.get("style") == "document"
    bodies = root.findall(f".//{{{WSDL_NS}}}binding//{{{WSDL_SOAP11_NS}}}body")
    assert bodies
    assert {body.get("use") for body in bodies} == {"literal"}
    address = root.find(f".//{{{WSDL_NS}}}port/{{{WSDL_SOAP11_NS}}}address")
    assert address is not None
    assert address.get("location") == f"http://127.0.0.1:{server.port}/"


@pytest.mark.timeout(30)
def test_original_zeep_client_contract(server: SoapServer) -> None:
    # Exactly how the original client called the spyne service.
    client = zeep.Client(wsdl=server.wsdl_url)  # type: ignore[no-untyped-call]
    assert client.service.modify_text("  hola   que\ttal \n") == "hola que tal"


@pytest.mark.timeout(30)
def test_malformed_post_gets_soap_fault_and_server_keeps_serving(server: SoapServer) -> None:
    status, body = _post(server.port, b"\x00garbage<<not xml", {"Content-Type": "text/xml"})
    assert status == 500
    assert _fault_string(body)

    status, body = _post(server.port, b"<notsoap/>", {"Content-Type": "text/xml"})
    assert status == 500
    assert _fault_string(body)

    assert Normaliser(server.wsdl_url).normalise(" still \t up ") == "still up"


@pytest.mark.timeout(30)
def test_post_without_content_length_gets_fault_not_hang(server: SoapServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Type", "text/xml")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 500
        assert _fault_string(response.read())
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_stalled_client_does_not_block_others(server: SoapServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        assert Normaliser(server.wsdl_url).normalise("a  b") == "a b"


@pytest.mark.timeout(60)
def test_concurrent_requests(server: SoapServer) -> None:
    normaliser = Normaliser(server.wsdl_url, timeout_s=10)
    texts = [f" item\t{i}  \n end " for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(normaliser.normalise, texts))
    assert results == [f"item {i} end" for i in range(24)]


# --- Normaliser ---------------------------------------------------------------------------------


def test_default_wsdl_url() -> None:
    assert DEFAULT_WSDL_URL == "http://127.0.0.1:5000/?wsdl"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  hola   que\ttal \n", "hola que tal"),
        ("", ""),
        ("   \n\t ", ""),
        ("a\u00a0b\u3000c\x85d", "a b c d"),
        # Not representable in XML 1.0; the client sends spaces instead.
        ("a\x0bb\x0cc\x1fd", "a b c d"),
        ("x\r\ny", "x y"),
        ("día ñandú 日本", "día ñandú 日本"),
    ],
)
def test_normaliser_against_service(server: SoapServer, text: str, expected: str) -> None:
    assert Normaliser(server.wsdl_url).normalise(text) == expected


@pytest.mark.timeout(30)
def test_normaliser_text_xml_cannot_carry(server: SoapServer) -> None:
    with pytest.raises(NormaliserUnavailable, match="cannot be sent"):
        Normaliser(server.wsdl_url).normalise("a\x00b")


@pytest.mark.timeout(30)
async def test_anormalise(server: SoapServer) -> None:
    assert await Normaliser(server.wsdl_url).anormalise(" async \t call ") == "async call"


@pytest.mark.timeout(30)
def test_normaliser_nothing_listening() -> None:
    normaliser = Normaliser(f"http://127.0.0.1:{_free_port()}/?wsdl", timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(NormaliserUnavailable, match="unavailable"):
        normaliser.normalise("x")
    assert time.monotonic() - started < 10
    # A later call retries instead of caching the failure.
    with pytest.raises(NormaliserUnavailable):
        normaliser.normalise("x")


@pytest.mark.timeout(30)
def test_normaliser_times_out_on_silent_peer() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections complete in the backlog but nothing answers
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(NormaliserUnavailable):
            Normaliser(f"http://127.0.0.1:{port}/?wsdl", timeout_s=0.5).normalise("x")
        assert time.monotonic() - started < 10


@pytest.mark.timeout(30)
def test_normaliser_not_a_wsdl(server: SoapServer) -> None:
    # Without ?wsdl the service answers 405, which is not a WSDL.
    with pytest.raises(NormaliserUnavailable):
        Normaliser(f"http://127.0.0.1:{server.port}/").normalise("x")


@pytest.mark.timeout(30)
def test_normaliser_recovers_when_service_starts_later() -> None:
    port = _free_port()
    normaliser = Normaliser(f"http://127.0.0.1:{port}/?wsdl")
    with pytest.raises(NormaliserUnavailable):
        normaliser.normalise("a  b")
    srv = make_server("127.0.0.1", port)
    thread = _serve_in_thread(srv)
    try:
        assert normaliser.normalise("a  b") == "a b"
    finally:
        srv.shutdown()
        thread.join(timeout=5)
        srv.server_close()


class _FaultingService(SoapService):
    __service_name__ = "NormaliserService"
    __tns__ = TNS

    @soap_operation(soap_action="modify_text")
    def modify_text(self, text: str) -> str:
        raise SoapFault("Server", "normaliser is broken")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.timeout(30)
def test_normaliser_fault_becomes_unavailable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # soapbar's plain-HTTP warning
        soap_app = SoapApplication(service_url="http://127.0.0.1:1/")  # endpoint is taken from the URL
    soap_app.register(_FaultingService())
    srv = make_wsgi_server("127.0.0.1", 0, WsgiSoapApp(soap_app), handler_class=_QuietHandler)
    thread = _serve_in_thread(srv)
    try:
        normaliser = Normaliser(f"http://127.0.0.1:{srv.server_port}/?wsdl")
        with pytest.raises(NormaliserUnavailable, match="normaliser is broken"):
            normaliser.normalise("x")
    finally:
        srv.shutdown()
        thread.join(timeout=5)
        srv.server_close()


# --- run_ws in a real process ------------------------------------------------------------------


_RUN_WS = (
    "import logging; logging.basicConfig(level=logging.INFO); "
    "from dmds.soap.service import run_ws; run_ws('127.0.0.1', 0)"
)


def _wait_for_wsdl_url(proc: subprocess.Popen[str], lines: list[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:  # bounded by the test's timeout
        lines.append(line)
        match = re.search(r"(http://\S+\?wsdl)", line)
        if match:
            return match.group(1)
    pytest.fail(f"run_ws exited before announcing its WSDL URL: {''.join(lines)}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_ws_subprocess_serves_and_stops_cleanly(signum: signal.Signals) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_WS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        wsdl_url = _wait_for_wsdl_url(proc, lines)
        assert wsdl_url.startswith("http://127.0.0.1:")
        client = zeep.Client(wsdl=wsdl_url)  # type: ignore[no-untyped-call]
        assert client.service.modify_text("  hola   que\ttal \n") == "hola que tal"
        assert Normaliser(wsdl_url).normalise("x \n y") == "x y"

        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = "".join(lines) + rest
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped" in stderr
