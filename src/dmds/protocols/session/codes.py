"""Session protocol error codes: numbers on the wire, named as in docs/protocol/session.md."""

from __future__ import annotations

import enum


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
