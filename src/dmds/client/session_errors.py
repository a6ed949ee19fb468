"""The errors of the session client and the words for the server's error codes.

`SessionError` is the server's Error frame raised to the caller, `ConnectionLost` a request that
lost its connection, `SessionClientError` the base of both; `describe_error` is the text people
read for an `ErrorCode` (the shell, the desktop window and these errors all use it).
"""

from __future__ import annotations

from typing import Final, TypeVar

from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode

__all__ = [
    "ERROR_TEXT",
    "FINAL_CODES",
    "ConnectionLost",
    "SessionClientError",
    "SessionError",
    "describe_error",
    "expect",
]

#: Error codes with which the server closes a connection that must not simply be reopened.
FINAL_CODES: Final = frozenset(
    {
        ErrorCode.ALREADY_LOGGED_IN,
        ErrorCode.BAD_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.BLOCKED,
        ErrorCode.KICKED,
    }
)
#: Codes whose Error message from the server adds to the text of ERROR_TEXT.
_DETAILED: Final = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.INVALID_FIELD,
        ErrorCode.LIMIT_EXCEEDED,
        ErrorCode.UNKNOWN_USER,
        ErrorCode.ALREADY_LOGGED_IN,
    }
)

#: The human text of every session ErrorCode.
ERROR_TEXT: Final[dict[ErrorCode, str]] = {
    ErrorCode.BAD_FRAME: "the server did not understand a frame",
    ErrorCode.FRAME_TOO_LARGE: "a frame was larger than the server accepts",
    ErrorCode.UNSUPPORTED_VERSION: "the server does not speak this protocol version",
    ErrorCode.NOT_LOGGED_IN: "not logged in",
    ErrorCode.BAD_CREDENTIALS: "wrong alias or password",
    ErrorCode.RATE_LIMITED: "too many failed attempts",
    ErrorCode.BAD_TOKEN: "the session expired or was ended elsewhere; log in with the password",
    ErrorCode.ALIAS_TAKEN: "alias already taken",
    ErrorCode.UNKNOWN_USER: "no such user",
    ErrorCode.INVALID_FIELD: "invalid value",
    ErrorCode.LIMIT_EXCEEDED: "limit reached",
    ErrorCode.ALREADY_LOGGED_IN: "already logged in",
    ErrorCode.UNKNOWN_ATTACHMENT: "no such attachment",
    ErrorCode.INTERNAL: "server error; try again",
    ErrorCode.IDLE_TIMEOUT: "the connection was idle for too long",
    ErrorCode.TOO_SLOW: "the client did not read fast enough",
    ErrorCode.BLOCKED: "this alias is blocked by the server's operator",
    ErrorCode.KICKED: "disconnected by the server's operator",
}


def describe_error(code: ErrorCode, message: str = "", retry_after_s: float = 0.0) -> str:
    """The human text of an Error frame: ERROR_TEXT, with the server's details where they help."""
    text = ERROR_TEXT.get(code, f"error {int(code)}")
    if code is ErrorCode.RATE_LIMITED and retry_after_s > 0:
        return f"{text}; try again in {retry_after_s:.0f} s"
    if code in _DETAILED and message and message != code.name:
        return message if message.startswith(text) else f"{text}: {message}"
    return text


class SessionClientError(Exception):
    """Base of the errors of the session client."""


class SessionError(SessionClientError):
    """The server answered a request with an Error frame."""

    def __init__(self, code: ErrorCode, message: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(describe_error(code, message, retry_after_s))
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class ConnectionLost(SessionClientError, ConnectionError):
    """The connection went away (or the client was closed) before the request was answered."""


_F = TypeVar("_F", bound=f.Frame)


def expect(answer: f.Frame, kind: type[_F]) -> _F:
    """`answer` if it is a `kind`; SessionClientError (a server bug) if not."""
    if not isinstance(answer, kind):
        raise SessionClientError(f"unexpected answer {type(answer).__name__}; expected {kind.__name__}")
    return answer
