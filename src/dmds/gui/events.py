"""What a worker reports to its window: one frozen dataclass an event, sent through the worker's
Qt signal `report` and read in the GUI thread.

The events serve both protocols' workers; the fields only the session protocol fills have defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmds.gui.conversations import AttachedFile
from dmds.protocols.session.codes import ErrorCode

__all__ = [
    "AttachmentSaved",
    "ConnectionChanged",
    "LinkChanged",
    "MessageArrived",
    "NormaliserChanged",
    "OperationDone",
    "PresenceUpdate",
    "ReceiptArrived",
    "SendDone",
    "ServerLimits",
    "ServerReachability",
    "UsersListed",
    "WorkerEvent",
]


@dataclass(frozen=True)
class WorkerEvent:
    """Base of everything the worker reports."""


@dataclass(frozen=True)
class OperationDone(WorkerEvent):
    """REGISTER, UNREGISTER, CONNECT or DISCONNECT (LOG IN, LOG OUT in session mode) finished:
    `code` from the server, or `error`.

    `code` is None when the server could not be asked or, in session mode, refused (`error` says why
    in words; `error_code` is then the session protocol's code, if the server answered one).
    """

    operation: str
    alias: str
    code: int | None
    error: str = ""
    error_code: ErrorCode | None = None


@dataclass(frozen=True)
class SendDone(WorkerEvent):
    """A SEND finished. `text` is what was sent (normalised); `message_id` means something if code is 0."""

    local_id: int
    dest: str
    text: str
    code: int | None
    message_id: int = 0
    error: str = ""
    #: session mode: the file sent with the message, as uploaded
    attachment: AttachedFile | None = None
    #: session mode: the protocol's code when the server refused the message
    error_code: ErrorCode | None = None


@dataclass(frozen=True)
class UsersListed(WorkerEvent):
    """CONNECTEDUSERS finished; `manual` if the person asked (not the refresh timer)."""

    code: int | None
    aliases: tuple[str, ...] = ()
    error: str = ""
    manual: bool = False


@dataclass(frozen=True)
class MessageArrived(WorkerEvent):
    sender: str
    message_id: int
    text: str
    attachment: AttachedFile | None = None


@dataclass(frozen=True)
class ReceiptArrived(WorkerEvent):
    """A receipt for a sent message. Classic: the id alone. Session: `to` names the recipient, and
    `read` tells a read receipt from a delivery receipt."""

    message_id: int
    to: str | None = None
    read: bool = False


@dataclass(frozen=True)
class ConnectionChanged(WorkerEvent):
    """The session's connected alias changed (None: not connected); `reason` if the server ended it."""

    alias: str | None
    reason: str = ""


@dataclass(frozen=True)
class NormaliserChanged(WorkerEvent):
    """The normaliser started or stopped answering; `detail` says why when it is down."""

    available: bool
    detail: str = ""


@dataclass(frozen=True)
class ServerReachability(WorkerEvent):
    """The server stopped answering (or answers again); `detail` is the last failure."""

    reachable: bool
    detail: str = ""


@dataclass(frozen=True)
class PresenceUpdate(WorkerEvent):
    """Session mode: who is online now (sorted). `alias` is who changed (`online` says how), or ""
    when the whole list came (after logging in)."""

    aliases: tuple[str, ...]
    alias: str = ""
    online: bool = False


@dataclass(frozen=True)
class LinkChanged(WorkerEvent):
    """Session mode, while logged in: the connection dropped (`up` False: the client library is
    reconnecting) or is back (`up` True: the session resumed)."""

    up: bool
    detail: str = ""


@dataclass(frozen=True)
class ServerLimits(WorkerEvent):
    """Session mode: the limits the server announced in its Welcome."""

    max_text_bytes: int
    max_attachment_bytes: int


@dataclass(frozen=True)
class AttachmentSaved(WorkerEvent):
    """Session mode: an attachment was fetched and written to `path` (`size` bytes), or `error`."""

    attachment_id: int
    path: str
    size: int = 0
    error: str = ""
