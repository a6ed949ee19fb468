"""The classic protocol of the original service (`shared/protocol/classic.md`), byte for byte."""

from dmds.protocols.classic.codec import (
    ClientConnection,
    LocalProtocolError,
    PushReader,
    RemoteProtocolError,
    ServerConnection,
    encode_push,
)
from dmds.protocols.classic.events import (
    Connect,
    ConnectedUsers,
    ConnectedUsersReply,
    Disconnect,
    MessagePush,
    Push,
    ReceiptPush,
    Register,
    Reply,
    Request,
    Send,
    SendReply,
    Unregister,
)

__all__ = [
    "ClientConnection",
    "Connect",
    "ConnectedUsers",
    "ConnectedUsersReply",
    "Disconnect",
    "LocalProtocolError",
    "MessagePush",
    "Push",
    "PushReader",
    "ReceiptPush",
    "Register",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "Send",
    "SendReply",
    "ServerConnection",
    "Unregister",
    "encode_push",
]
