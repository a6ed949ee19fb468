"""Client side of the SOAP text normaliser, used by the command-line and desktop clients.

``Normaliser`` calls the ``modify_text`` operation of ``dmds.soap.service`` (or
of the original spyne ``ws-server.py``) through zeep and turns every way the
call can fail into ``NormaliserUnavailable``, so callers handle one exception.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import zeep
import zeep.exceptions
from lxml import etree

__all__ = ["DEFAULT_WSDL_URL", "Normaliser", "NormaliserUnavailable"]

DEFAULT_WSDL_URL = "http://127.0.0.1:5000/?wsdl"

# Whitespace that XML 1.0 cannot carry (vertical tab, form feed, \x1c-\x1f).
# The service collapses any whitespace to one space, so sending a space instead
# gives the same result rather than a serialisation error.
_XML_UNSAFE_SPACE = str.maketrans(
    {ch: " " for ch in map(chr, range(0x20)) if ch.isspace() and ch not in "\t\n\r"}
)


class NormaliserUnavailable(Exception):
    """The normaliser could not be reached, timed out, or answered with a fault."""


def _endpoint_of(wsdl_url: str) -> str:
    parts = urlsplit(wsdl_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


class Normaliser:
    """Blocking (and thread-offloaded async) client of the ``modify_text`` operation.

    The zeep client is built on first use, and rebuilt after a failure to reach
    the service, so a service started later is picked up without a restart.
    """

    def __init__(self, wsdl_url: str, timeout_s: float = 2.0) -> None:
        self._wsdl_url = wsdl_url
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._service: Any = None

    @property
    def wsdl_url(self) -> str:
        return self._wsdl_url

    def _get_service(self) -> Any:
        with self._lock:
            if self._service is None:
                # zeep ships py.typed but leaves these constructors unannotated.
                transport = zeep.Transport(  # type: ignore[no-untyped-call]
                    timeout=self._timeout_s, operation_timeout=self._timeout_s
                )
                client = zeep.Client(wsdl=self._wsdl_url, transport=transport)  # type: ignore[no-untyped-call]
                # The WSDL's soap:address is the server's own idea of its
                # address (wrong behind a wildcard bind, NAT or proxy); the URL
                # the WSDL was fetched from is known to be reachable.
                binding_name = next(iter(client.wsdl.bindings), None)
                if binding_name is None:
                    raise NormaliserUnavailable(f"{self._wsdl_url} describes no SOAP binding")
                endpoint = _endpoint_of(self._wsdl_url)
                self._service = client.create_service(binding_name, endpoint)  # type: ignore[no-untyped-call]
            return self._service

    def _forget_service(self) -> None:
        with self._lock:
            self._service = None

    def normalise(self, text: str) -> str:
        """Return *text* with whitespace runs collapsed to one space and the ends stripped.

        Raises NormaliserUnavailable if the service cannot be used.
        """
        try:
            result = self._get_service().modify_text(text.translate(_XML_UNSAFE_SPACE))
        except zeep.exceptions.Fault as exc:
            raise NormaliserUnavailable(
                f"text normaliser at {self._wsdl_url} answered with a fault: {exc.message}"
            ) from exc
        except (OSError, zeep.exceptions.Error, etree.Error) as exc:
            # OSError covers requests' connection errors and timeouts.
            self._forget_service()
            raise NormaliserUnavailable(
                f"text normaliser at {self._wsdl_url} is unavailable: {exc or type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            # lxml refuses characters XML 1.0 cannot carry (NUL, most C0 controls).
            raise NormaliserUnavailable(f"text cannot be sent to the text normaliser: {exc}") from exc
        # zeep maps an empty result element to None.
        return "" if result is None else str(result)

    async def anormalise(self, text: str) -> str:
        """Async variant of ``normalise``; the blocking call runs in a worker thread."""
        return await asyncio.to_thread(self.normalise, text)
