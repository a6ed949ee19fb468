"""An OSError (refused, unreachable, timed out, a TLS failure) put in words for the person at the client.

Python's own text of such errors repeats the errno and the address (``[Errno 111] Connect call failed
('127.0.0.1', 7000)``), which the clients already say in their own words around it; this says just why.
"""

from __future__ import annotations

import os
import socket
import ssl

__all__ = ["os_reason"]


def os_reason(exc: BaseException | None) -> str:
    """Why `exc` happened, in a few words (``Connection refused``); "" for None.

    Anything that is not an OSError (an error of the protocol, say) is described by its own text.
    """
    if exc is None:
        return ""
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "verify_message", None) or exc.reason or str(exc)
    if isinstance(exc, TimeoutError) and not exc.errno:
        return "timed out"
    if isinstance(exc, socket.gaierror):  # its errno is not one os.strerror knows
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
