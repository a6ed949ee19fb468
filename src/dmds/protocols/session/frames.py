"""Session protocol frames: msgspec Structs, encoded as MessagePack maps tagged by the field "t".

docs/protocol/session.md is the contract: each class here is one row of its tables. Requests from
the client carry `id`, a number the client chooses; the server's answer to a request carries it
back as `re`. Frames without `re` from the server are pushes.

Why MessagePack through msgspec: binary (attachment chunks travel as bytes, not base64), compact,
and msgspec decodes straight into these typed classes with validation at about a microsecond a
frame, so a malformed or mistyped frame is rejected by the decoder, not by hand-written checks.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from dmds.protocols.session.codes import ErrorCode

#: The newest protocol version this code speaks. A Hello names the newest its client speaks, the
#: Welcome the version agreed: the older of the two sides' newest, and never below OLDEST_VERSION.
#: Version 2 adds `Messages` (several messages in one push) and receipt ranges (`Delivered.first`);
#: a version 1 connection never sees either.
VERSION = 2
OLDEST_VERSION = 1

# 64 characters: at most 256 UTF-8 bytes, the classic protocol's default field limit, so that every
# user can be addressed from both protocols.
Alias = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
# From 1: `re` 0 on an Error means "about the connection, not a request".
RequestId = Annotated[int, msgspec.Meta(ge=1, lt=2**32)]
# 2**53: ids stay exact in a browser's JavaScript numbers.
MessageId = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Frame(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame. Unknown fields are ignored, so that minor additions stay compatible."""


# -- connection ---------------------------------------------------------------------------------------


#: What a client may ask for in Hello.features: pushes that a client which did not ask never gets.
TYPING = "typing"
#: Version 2: delivery receipts as ranges (`Delivered.first`), one push for many messages. For a
#: client that knows which of its messages a range holds (their ids came back in `Accepted`).
RECEIPT_RANGES = "receipt_ranges"
#: Version 2: a `GoAway` push before the server stops, so that the client moves to another node (or
#: waits for this one to come back) at once instead of learning it from a closed connection.
GOAWAY = "goaway"


class Hello(Frame, tag="hello"):
    """Client, first frame: the protocol version it speaks, what it is, and the optional pushes it
    understands (`features`; a server ignores names it does not know)."""

    version: int
    client: ShortText = ""
    features: Annotated[list[ShortText], msgspec.Meta(max_length=16)] = msgspec.field(default_factory=list)


class Welcome(Frame, tag="welcome"):
    """Server, answer to Hello: the version agreed and the limits the client must respect."""

    version: int
    server: ShortText
    heartbeat_s: float
    idle_timeout_s: float
    max_frame_bytes: int
    max_text_bytes: int
    max_attachment_bytes: int


class Ping(Frame, tag="ping"):
    """Either side: are you there? Answered by Pong with the same `n`."""

    n: int = 0


class Pong(Frame, tag="pong"):
    n: int = 0


class Error(Frame, tag="error"):
    """Server: a request failed (`re` set), or the connection is being closed (`re` 0)."""

    code: ErrorCode
    message: str = ""
    re: int = 0
    retry_after_s: float = 0.0


class GoAway(Frame, tag="goaway"):
    """Server push, version 2, to a client that asked for GOAWAY: this server is stopping. It
    answers nothing more and closes the connection once the requests in flight are answered; the
    client should connect again now (to another node if it knows one). A Send left unanswered is
    safe to send again with its key."""

    reason: ShortText = ""


class Ok(Frame, tag="ok"):
    """Server: the request `re` succeeded and has nothing more to say."""

    re: int


# -- accounts -----------------------------------------------------------------------------------------


class Register(Frame, tag="register"):
    id: RequestId
    alias: Alias
    full_name: ShortText
    birth_date: ShortText  # DD/MM/YYYY, as in the classic protocol
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class Login(Frame, tag="login"):
    """Log in with a password, or resume with a token from an earlier LoggedIn (then no password)."""

    id: RequestId
    alias: Alias = "-"
    password: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    token: Annotated[str, msgspec.Meta(max_length=256)] = ""


class LoggedIn(Frame, tag="logged_in"):
    """Server: the session is open; `token` resumes it later without the password, until `expires_at`."""

    re: int
    alias: Alias
    token: str
    expires_at: float


class Logout(Frame, tag="logout"):
    """End the session and revoke its token."""

    id: RequestId


class ChangePassword(Frame, tag="change_password"):
    id: RequestId
    old_password: Annotated[str, msgspec.Meta(max_length=1024)]
    new_password: Annotated[str, msgspec.Meta(max_length=1024)]


class DeleteAccount(Frame, tag="delete_account"):
    id: RequestId
    password: Annotated[str, msgspec.Meta(max_length=1024)]


# -- messages -----------------------------------------------------------------------------------------


class Send(Frame, tag="send"):
    """Send `text` (and optionally an uploaded attachment) to `to`.

    `key` is chosen by the client, unique per message it sends: a resend with the same key (after a
    dropped connection) is answered with the same message id and never delivered twice.
    """

    id: RequestId
    to: Alias
    key: Key
    text: str
    attachment: int = 0


class Accepted(Frame, tag="accepted"):
    """Server: the message is durable (committed); `message_id` is its id in the recipient's mailbox."""

    re: int
    to: Alias
    key: Key
    message_id: MessageId


class Message(Frame, tag="message"):
    """Server push: a message for you. Acknowledge it with Ack, or it is pushed again next login."""

    sender: Alias
    message_id: MessageId
    text: str
    sent_at: float
    attachment: Attachment | None = None


class Ack(Frame, tag="ack"):
    """Client: these messages (ids in your mailbox) have reached the client; they count as delivered."""

    message_ids: list[MessageId]


class MarkRead(Frame, tag="mark_read"):
    """Client: these messages were read by the person; their senders get Read receipts."""

    message_ids: list[MessageId]


class Messages(Frame, tag="messages"):
    """Server push, version 2: several messages at once, in id order (a page of stored ones, or
    what arrived during one pass of the server). Each is acknowledged as if pushed alone."""

    messages: list[Message]


class Delivered(Frame, tag="delivered"):
    """Server push to a sender: message `message_id` to `to` reached the recipient's client.

    Version 2, to a client that asked for RECEIPT_RANGES, with `first` > 0: a range. Every message
    of yours to `to` with an id from `first` to `message_id` reached it (`key` is the last one's).
    Ids are the recipient's mailbox ids, so the range may hold ids of other senders' messages:
    they are not yours to count."""

    to: Alias
    message_id: MessageId
    key: str = ""
    first: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0

    def covers(self, message_id: int) -> bool:
        """Whether this receipt is about your message `message_id` to `to`."""
        if self.first:
            return self.first <= message_id <= self.message_id
        return message_id == self.message_id


class Read(Frame, tag="read"):
    """Server push to a sender: the recipient marked message `message_id` read."""

    to: Alias
    message_id: MessageId
    key: str = ""


class Typing(Frame, tag="typing"):
    """Client: the person is typing to `to`. Ephemeral: never stored, never answered, dropped when
    `to` is not connected or when it comes sooner than `typing_interval_s` after the last one."""

    to: Alias


class TypingFrom(Frame, tag="typing"):
    """Server push (to clients that asked for the "typing" feature): `sender` is typing to you."""

    sender: Alias


# -- presence -----------------------------------------------------------------------------------------


class Subscribe(Frame, tag="subscribe"):
    """Ask for presence: answered by Presence (who is online now), then PresenceChanged as it changes."""

    id: RequestId


class Presence(Frame, tag="presence"):
    re: int
    online: list[Alias]


class PresenceChanged(Frame, tag="presence_changed"):
    alias: Alias
    online: bool


# -- history ------------------------------------------------------------------------------------------


class History(Frame, tag="history"):
    """Page back through the conversation with `peer`: messages older than `before` (0: newest)."""

    id: RequestId
    peer: Alias
    before: float = 0.0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50


class HistoryEntry(msgspec.Struct, omit_defaults=True):
    sender: Alias
    recipient: Alias
    message_id: MessageId
    text: str
    sent_at: float
    delivered_at: float = 0.0
    read_at: float = 0.0
    attachment: Attachment | None = None


class HistoryPage(Frame, tag="history_page"):
    re: int
    entries: list[HistoryEntry]
    more: bool


# -- attachments --------------------------------------------------------------------------------------


class Attachment(msgspec.Struct, omit_defaults=True):
    """An uploaded file, as carried by Message and HistoryEntry."""

    attachment_id: int
    name: ShortText
    media_type: ShortText
    size: int


class UploadStart(Frame, tag="upload_start"):
    id: RequestId
    name: ShortText
    media_type: ShortText
    size: Annotated[int, msgspec.Meta(ge=0)]


class UploadChunk(Frame, tag="upload_chunk"):
    """Append `data` to the upload; chunks must come in order (`offset` is checked)."""

    id: RequestId
    upload: int
    offset: Annotated[int, msgspec.Meta(ge=0)]
    data: bytes


class UploadReady(Frame, tag="upload_ready"):
    """Answer to UploadStart (offset 0) and to each UploadChunk (the offset expected next). Once
    `offset` equals the size, `attachment` is the id to name in Send."""

    re: int
    upload: int
    offset: int
    attachment: int = 0


class Fetch(Frame, tag="fetch"):
    id: RequestId
    attachment: int
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    length: Annotated[int, msgspec.Meta(ge=1)] = 262144


class Chunk(Frame, tag="chunk"):
    re: int
    attachment: int
    offset: int
    data: bytes
    size: int


ClientFrame = (
    Hello
    | Ping
    | Pong
    | Register
    | Login
    | Logout
    | ChangePassword
    | DeleteAccount
    | Send
    | Ack
    | MarkRead
    | Typing
    | Subscribe
    | History
    | UploadStart
    | UploadChunk
    | Fetch
)
ServerFrame = (
    Welcome
    | Ping
    | Pong
    | Error
    | GoAway
    | Ok
    | LoggedIn
    | Accepted
    | Message
    | Messages
    | Delivered
    | Read
    | TypingFrom
    | Presence
    | PresenceChanged
    | HistoryPage
    | UploadReady
    | Chunk
)
