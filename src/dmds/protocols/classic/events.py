"""Classic protocol events: requests (client to server), replies, and pushes (server to listener).

Requests are named after their operation; the wire name of each is its `OP` class attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Request:
    OP: ClassVar[bytes] = b""


@dataclass(frozen=True, slots=True)
class Register(Request):
    OP: ClassVar[bytes] = b"REGISTER"
    full_name: str
    alias: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class Unregister(Request):
    OP: ClassVar[bytes] = b"UNREGISTER"
    alias: str


@dataclass(frozen=True, slots=True)
class Connect(Request):
    OP: ClassVar[bytes] = b"CONNECT"
    alias: str
    listen_port: int


@dataclass(frozen=True, slots=True)
class Disconnect(Request):
    OP: ClassVar[bytes] = b"DISCONNECT"
    alias: str


@dataclass(frozen=True, slots=True)
class Send(Request):
    OP: ClassVar[bytes] = b"SEND"
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class ConnectedUsers(Request):
    OP: ClassVar[bytes] = b"CONNECTEDUSERS"
    alias: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The reply of REGISTER, UNREGISTER, CONNECT and DISCONNECT: one result code."""

    code: int


@dataclass(frozen=True, slots=True)
class SendReply(Reply):
    #: classic.md: the 4 id bytes follow every SEND reply; meaningful only when code is 0
    message_id: int = 0


@dataclass(frozen=True, slots=True)
class ConnectedUsersReply(Reply):
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Push:
    OP: ClassVar[bytes] = b""


@dataclass(frozen=True, slots=True)
class MessagePush(Push):
    OP: ClassVar[bytes] = b"SEND_MESSAGE"
    sender: str
    message_id: int
    text: str


@dataclass(frozen=True, slots=True)
class ReceiptPush(Push):
    OP: ClassVar[bytes] = b"SEND_MESS_ACK"
    message_id: int


REQUESTS: tuple[type[Request], ...] = (Register, Unregister, Connect, Disconnect, Send, ConnectedUsers)
PUSHES: tuple[type[Push], ...] = (MessagePush, ReceiptPush)
