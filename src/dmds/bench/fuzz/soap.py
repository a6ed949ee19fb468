"""The oracle of the SOAP normaliser: `normalise_text` and the WSGI application `make_server` serves."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from lxml import etree

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication


from dmds.bench.fuzz.rule import RuleBroken


@dataclasses.dataclass(frozen=True)
class SoapAnswer:
    """What the normaliser's WSGI application answered, checked against the rule."""

    status: int
    content_type: str
    body: bytes
    #: the modify_textResult of a 200 answer to POST
    result: str | None = None
    #: the fault code (local part: Client, Sender...) of a fault
    fault: str | None = None


_CLIENT_FAULTS: Final = frozenset(
    {"Client", "Sender", "VersionMismatch", "MustUnderstand", "DataEncodingUnknown"}
)
# The answers are the server's own, but parse them like untrusted input all the same.
_ANSWER_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2]


class SoapOracle:
    """Checks `normalise_text` and the WSGI application the normaliser service serves."""

    def __init__(self) -> None:
        from dmds.soap import service  # noqa: PLC0415 - imported late: see dmds.bench.fuzz

        self._normalise: Callable[[str], str] = service.normalise_text
        # The app exactly as make_server serves it, with the wrapper for a missing Content-Length.
        self._app: WSGIApplication = service._empty_body_without_length(service.build_app())
        self._errors = _ErrorRecords()
        # soapbar logs an exception it catches at ERROR; under the rule that is a crash.
        logging.getLogger("soapbar").addHandler(self._errors)

    def close(self) -> None:
        logging.getLogger("soapbar").removeHandler(self._errors)

    def text(self, text: str) -> str:
        out = self._normalise(text)
        if type(out) is not str or out.split() != text.split():
            raise RuleBroken(f"normalise_text({text!r}) = {out!r} changed the words")
        if out != out.strip() or "  " in out or any(ch.isspace() and ch != " " for ch in out):
            raise RuleBroken(f"normalise_text({text!r}) = {out!r} is not normalised")
        return out

    def request(
        self,
        body: bytes,
        *,
        method: str = "POST",
        content_type: str | None = "text/xml; charset=utf-8",
        soap_action: str | None = '"modify_text"',
        accept: str = "",
        query: str = "",
        content_length: bool = True,
    ) -> SoapAnswer:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "5000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        if content_length:
            environ["CONTENT_LENGTH"] = str(len(body))
        if soap_action is not None:
            environ["HTTP_SOAPACTION"] = soap_action
        if accept:
            environ["HTTP_ACCEPT"] = accept
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            started.append((status, headers))
            return lambda _data: None

        self._errors.records.clear()
        chunks = self._app(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if self._errors.records:
            record = self._errors.records[0]
            raise RuleBroken(f"soapbar logged an error: {record.getMessage()} {record.exc_text or ''}")
        if len(started) != 1:
            raise RuleBroken(f"start_response called {len(started)} times")
        status_line, headers = started[0]
        fields = {name.lower(): value for name, value in headers}
        if fields.get("content-length") != str(len(out)):
            raise RuleBroken(f"Content-Length {fields.get('content-length')} for {len(out)} bytes")
        status = int(status_line.split()[0])
        answer = SoapAnswer(status, fields.get("content-type", ""), out)
        if method == "POST":
            return self._check_post(answer)
        if method == "GET" and "wsdl" in query.lower():
            if status == 404 or (status == 200 and b"definitions" in out[:400]):
                return answer
            raise RuleBroken(f"GET ?{query[:40]!r} answered {status_line}: {out[:200]!r}")
        if status != 405:
            raise RuleBroken(f"{method[:20]!r} answered {status_line}")
        return answer

    def _check_post(self, answer: SoapAnswer) -> SoapAnswer:
        status, body = answer.status, answer.body
        if answer.content_type.startswith("application/json"):
            document = json.loads(body)
            if status == 200 and isinstance(document, dict) and "modify_textResult" in document:
                result = document["modify_textResult"]
                fault = None
            elif status in (400, 500) and isinstance(document, dict) and "fault" in document:
                result, fault = None, str(document["fault"].get("code"))
            else:
                raise RuleBroken(f"JSON answer {status}: {body[:200]!r}")
        else:
            root = etree.fromstring(body, _ANSWER_PARSER)
            body_element = next((e for e in root if _local(e.tag) == "Body"), None)
            first = body_element[0] if body_element is not None and len(body_element) else None
            if status == 200 and first is not None and _local(first.tag) == "modify_textResponse":
                found = next((e for e in first.iter() if _local(e.tag) == "modify_textResult"), None)
                if found is None:
                    raise RuleBroken(f"200 without modify_textResult: {body[:300]!r}")
                result, fault = found.text or "", None
            elif status in (400, 500) and first is not None and _local(first.tag) == "Fault":
                # SOAP 1.1: <faultcode>; SOAP 1.2: <Code><Value>.
                code = next((e for e in first.iter() if _local(e.tag) in ("faultcode", "Value")), None)
                result, fault = None, ((code.text or "") if code is not None else "").rpartition(":")[2]
            else:
                raise RuleBroken(f"answer {status}: {body[:300]!r}")
        if fault is not None:
            if fault not in _CLIENT_FAULTS:
                raise RuleBroken(f"{fault} fault: the server failed, {body[:300]!r}")
            return dataclasses.replace(answer, fault=fault)
        if not isinstance(result, str) or self._normalise(result) != result:
            raise RuleBroken(f"result {result!r} is not normalised text")
        return dataclasses.replace(answer, result=result)
