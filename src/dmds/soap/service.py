"""The SOAP text normaliser service: ``modify_text(text) -> text``.

Replaces the original spyne ``ws-server.py`` with soapbar, keeping its contract so
existing zeep clients work unchanged: target namespace
``http://tests.python-zeep.org/``, one SOAP 1.1 document/literal (wrapped)
operation ``modify_text``, WSDL at ``/?wsdl``, default port 5000.

soapbar provides the WSGI application (``WsgiSoapApp``); it is served by the
stdlib ``wsgiref`` server with one thread per request, so no extra dependency
is needed.
"""

from __future__ import annotations

import io
import logging
import signal
import socket
import threading
import warnings
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from lxml import etree
from soapbar import (
    OperationParameter,
    SoapApplication,
    SoapService,
    WsgiSoapApp,
    XsdType,
    soap_operation,
    xsd,
)

__all__ = [
    "DEFAULT_PORT",
    "OPERATION_NAME",
    "TARGET_NAMESPACE",
    "SoapServer",
    "build_app",
    "make_server",
    "normalise_text",
    "run_ws",
]

_log = logging.getLogger(__name__)

TARGET_NAMESPACE = "http://tests.python-zeep.org/"
OPERATION_NAME = "modify_text"
DEFAULT_PORT = 5000

# A handler thread blocked on a stalled client is released after this long.
_REQUEST_TIMEOUT_S = 30.0
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def normalise_text(text: str) -> str:
    """Collapse every run of whitespace (as ``str.split`` sees it) to one space and strip the ends."""
    return " ".join(text.split())


def _xsd_string() -> XsdType:
    string_type = xsd.python_to_xsd(str)
    if string_type is None:  # pragma: no cover - soapbar always maps str
        raise RuntimeError("soapbar has no XSD mapping for str")
    return string_type


class _NormaliserService(SoapService):
    __service_name__ = "NormaliserService"
    __tns__ = TARGET_NAMESPACE

    # soapAction and the result element name follow what spyne published for
    # ``@rpc(Unicode, _returns=Unicode)``, so hand-written clients still match.
    @soap_operation(
        name=OPERATION_NAME,
        soap_action=OPERATION_NAME,
        output_params=[OperationParameter(name=f"{OPERATION_NAME}Result", xsd_type=_xsd_string())],
    )
    def modify_text(self, text: str) -> str:
        return normalise_text(text)


def build_app(service_url: str = f"http://127.0.0.1:{DEFAULT_PORT}/") -> WsgiSoapApp:
    """Build the soapbar WSGI application; *service_url* is the endpoint the WSDL advertises."""
    with warnings.catch_warnings():
        # soapbar warns on every plain-HTTP endpoint; this service is plain HTTP by design.
        warnings.filterwarnings("ignore", message="service_url uses plain HTTP", category=UserWarning)
        soap_app = SoapApplication(service_url=service_url)
    soap_app.register(_NormaliserService())
    return WsgiSoapApp(soap_app)


def _empty_body_without_length(app: WSGIApplication) -> WSGIApplication:
    """Give requests without Content-Length an empty body.

    WsgiSoapApp reads up to its size limit when the length is unknown, which on
    wsgiref's raw socket stream blocks until the client closes the connection.
    HTTP/1.1 says such a request has no body, so soapbar then answers with a fault.
    A malformed MTOM body gets a fault too, rather than an exception out of the app.
    """

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not environ.get("CONTENT_LENGTH"):
            environ["wsgi.input"] = io.BytesIO()
        try:
            return app(environ, start_response)
        except (ValueError, etree.XMLSyntaxError):
            # WsgiSoapApp decodes an MTOM (multipart/related) body outside its fault handling, so
            # a malformed one raised out of the app: a bare 500 and a traceback per request.
            # Answer it as soapbar answers any malformed body, with a Client fault.
            content_type = str(environ.get("CONTENT_TYPE", ""))
            if "multipart/related" not in content_type.lower():
                raise
            environ["CONTENT_TYPE"] = "application/soap+xml" if "soap+xml" in content_type else "text/xml"
            environ["CONTENT_LENGTH"] = "0"
            environ["wsgi.input"] = io.BytesIO()
            return app(environ, start_response)

    return wrapped


class _RequestHandler(WSGIRequestHandler):
    timeout = _REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        # wsgiref writes an access line per request to stderr; keep it in logging instead.
        _log.debug("%s %s", self.address_string(), format % args)


class SoapServer(ThreadingMixIn, WSGIServer):
    """Threaded WSGI server for the normaliser; one thread per request."""

    daemon_threads = True  # an in-flight request must not block shutdown
    wsdl_url: str = ""

    @property
    def port(self) -> int:
        """The bound TCP port (useful after binding port 0)."""
        return self.server_port

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; dropped connections are routine.
        _log.debug("error while serving %s", client_address, exc_info=True)


class _SoapServer6(SoapServer):
    address_family = socket.AF_INET6


def _url_host(host: str) -> str:
    if host in _WILDCARD_HOSTS:
        # The WSDL must name an address clients can reach, which a wildcard is not.
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def make_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> SoapServer:
    """Bind a server for the normaliser app on (*host*, *port*); port 0 picks a free port.

    The WSDL advertises the bound port, so binding port 0 yields a usable contract.
    """
    server_class = _SoapServer6 if ":" in host else SoapServer
    server = server_class((host, port), _RequestHandler)
    service_url = f"http://{_url_host(host)}:{server.port}/"
    server.set_app(_empty_body_without_length(build_app(service_url)))
    server.wsdl_url = f"{service_url}?wsdl"
    return server


def run_ws(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the normaliser in the foreground until SIGINT or SIGTERM, then stop cleanly.

    Must be called from the main thread (it installs signal handlers).
    """
    server: SoapServer | None = None
    stop_requested = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        # shutdown() waits for serve_forever() to return, so it cannot run on
        # the main thread, which is the one executing serve_forever().
        if server is not None:
            threading.Thread(target=server.shutdown, name="dmds-soap-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = make_server(host, port)
        _log.info("SOAP normaliser listening, WSDL at %s", server.wsdl_url)
        try:
            # A signal that arrived while binding found no server to shut down.
            if not stop_requested:
                server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
        _log.info("SOAP normaliser stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
