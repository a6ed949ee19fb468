"""The classic protocol's result codes: the one table from domain errors to wire codes.

classic.md: codes depend on the operation. Any error not in an operation's row (a store failure, an
invalid field, a limit, a protocol error) is that operation's "other error": 3 for CONNECT and
DISCONNECT, 2 for the rest and for an unknown operation.
"""

from __future__ import annotations

from typing import Final

from dmds.errors import AliasTaken, AlreadyConnected, Blocked, NotConnected, UnknownUser
from dmds.protocols.classic.events import (
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    Register,
    Reply,
    Request,
    Send,
    SendReply,
    Unregister,
)

OK: Final = 0

RESULT_CODES: Final[dict[type[Request], dict[type[Exception], int]]] = {
    # A blocked alias is not free to take: 1. Blocked elsewhere is "other error" (CONNECT: 3).
    Register: {AliasTaken: 1, Blocked: 1},
    Unregister: {UnknownUser: 1},
    Connect: {UnknownUser: 1, AlreadyConnected: 2},
    Disconnect: {UnknownUser: 1, NotConnected: 2},
    # classic.md: a registered sender who is not connected gets 2 (other error), not 1.
    Send: {UnknownUser: 1},
    # classic.md: CONNECTEDUSERS from an unknown user is "other error" too.
    ConnectedUsers: {NotConnected: 1},
}
OTHER_ERROR: Final[dict[type[Request], int]] = {Connect: 3, Disconnect: 3}
DEFAULT_OTHER_ERROR: Final = 2


def code_for(op: type[Request] | None, exc: BaseException) -> int:
    """The result code that answers `op` failing with `exc`."""
    if op is None:
        return DEFAULT_OTHER_ERROR
    for kind, code in RESULT_CODES[op].items():
        if isinstance(exc, kind):
            return code
    return OTHER_ERROR.get(op, DEFAULT_OTHER_ERROR)


def error_reply(op: type[Request] | None, exc: BaseException) -> Reply:
    """The whole reply for a failed request: SEND's carries the 4 id bytes, as every SEND reply must."""
    code = code_for(op, exc)
    if op is Send:
        return SendReply(code)
    if op is ConnectedUsers:
        return ConnectedUsersReply(code)
    return Reply(code)
