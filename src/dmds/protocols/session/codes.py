"""Session protocol error codes: numbers on the wire, named as in docs/protocol/session.md."""

from __future__ import annotations

import enum

from dmds import errors


class ErrorCode(enum.IntEnum):
    """Codes of `Error` frames. Stable on the wire: never renumber, only add."""

    #: the frame could not be decoded, or is not legal in this state; the connection is closed
    BAD_FRAME = 1
    #: the frame's length prefix is above the server's max_frame_bytes; the connection is closed
    FRAME_TOO_LARGE = 2
    #: Hello asked for a version this server does not speak; the connection is closed
    UNSUPPORTED_VERSION = 3
    #: the request needs a logged-in session
    NOT_LOGGED_IN = 4
    #: wrong alias or password (deliberately not saying which)
    BAD_CREDENTIALS = 5
    #: too many wrong passwords for this alias or from this address; retry after `retry_after_s`
    RATE_LIMITED = 6
    #: the session token is unknown, revoked or expired: log in with the password
    BAD_TOKEN = 7
    #: Register of an alias that exists
    ALIAS_TAKEN = 8
    #: the alias named does not exist
    UNKNOWN_USER = 9
    #: a field's value is not acceptable (empty alias, bad date, weak password...)
    INVALID_FIELD = 10
    #: a per-user limit (stored messages, bytes, send rate, attachment size) would be passed
    LIMIT_EXCEEDED = 11
    #: the operation needs the user to be logged out first, or logged in elsewhere is not allowed
    ALREADY_LOGGED_IN = 12
    #: an attachment or upload id that does not exist or is not yours
    UNKNOWN_ATTACHMENT = 13
    #: the server failed (store error); the request may be retried (sends with the same key are safe)
    INTERNAL = 14
    #: no frame from the client within the idle timeout; the connection is closed
    IDLE_TIMEOUT = 15
    #: the client did not read its frames fast enough; it is disconnected, its messages stay stored
    TOO_SLOW = 16
    #: the alias is blocked by the server's operator: Login and Register refused, and a connection
    #: logged in as it is closed with this when it is blocked; do not reconnect
    BLOCKED = 17
    #: the server's operator ended this connection (disconnected the user, or deleted the account);
    #: the connection is closed; do not reconnect by yourself
    KICKED = 18


# -- the one table from domain errors to session error codes ---------------------------------------------

ERROR_CODES: dict[type[Exception], ErrorCode] = {
    errors.AliasTaken: ErrorCode.ALIAS_TAKEN,
    errors.UnknownUser: ErrorCode.UNKNOWN_USER,
    errors.InvalidField: ErrorCode.INVALID_FIELD,
    errors.LimitExceeded: ErrorCode.LIMIT_EXCEEDED,
    errors.BadCredentials: ErrorCode.BAD_CREDENTIALS,
    errors.RateLimited: ErrorCode.RATE_LIMITED,
    errors.BadToken: ErrorCode.BAD_TOKEN,
    errors.NotConnected: ErrorCode.NOT_LOGGED_IN,
    errors.AlreadyConnected: ErrorCode.ALREADY_LOGGED_IN,
    errors.UnknownAttachment: ErrorCode.UNKNOWN_ATTACHMENT,
    errors.Forbidden: ErrorCode.BAD_CREDENTIALS,
    errors.Blocked: ErrorCode.BLOCKED,
    errors.Kicked: ErrorCode.KICKED,
}


def code_for(exc: BaseException) -> ErrorCode:
    """The code answering a request that failed with `exc`: INTERNAL for anything not the client's doing."""
    for kind, code in ERROR_CODES.items():
        if isinstance(exc, kind):
            return code
    return ErrorCode.INTERNAL
