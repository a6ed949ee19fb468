"""The core's values: what is stored and delivered."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ItemKind(enum.IntEnum):
    """What an outbox item carries to its owner. Stored as this number: do not renumber."""

    #: a message to the owner
    MESSAGE = 1
    #: a delivery receipt: a message the owner sent reached its recipient
    DELIVERED = 2
    #: a read receipt: the recipient marked a message of the owner's read
    READ = 3


@dataclass(frozen=True, slots=True)
class User:
    alias: str
    full_name: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A registered user as the core needs to see them."""

    alias: str
    #: argon2 hash of the password, or None for a user of the classic protocol (no password)
    password_hash: str | None
    #: an operator blocked the alias: no login, no CONNECT (`dmds admin block`)
    blocked: bool = False

    @property
    def protected(self) -> bool:
        """A user with a password cannot be acted for through the classic protocol."""
        return self.password_hash is not None


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    attachment_id: int
    name: str
    media_type: str
    size: int


#: One message of several sent at once (`Store.add_messages`): (recipient, text, key).
SendCall = tuple[str, str, str | None]


# Not frozen, though nothing changes one once made: a frozen dataclass's __init__ sets each field
# through object.__setattr__, 5x the cost (2.0 against 0.4 µs here), and one is made per message.
@dataclass(slots=True)
class OutboxItem:
    """One thing waiting to be pushed to `owner`.

    `seq` orders every item of the store (and so every item of one owner). `message_id` is the
    message's id in its recipient's mailbox. For a MESSAGE, `peer` is the sender; for a receipt,
    `peer` is the recipient the owner sent the message to, and `key` the key the owner gave it.

    `after` is for a store that other processes write too: the seq of the owner's item stored just
    before this one (0 if none is left), so that a courier offered this item knows whether another
    node's item lies between it and what the courier has read. 0 from a store no other process
    writes (SQLite): every item of the owner committed while a courier runs is offered to it.

    `ids`, for a DELIVERED receipt from a store that keeps receipts as ranges (both engines): the
    messages of the owner's to `peer` it covers, as (message_id, key) in id order, `message_id`
    being the last. Ranges of one sender and recipient only grow upwards, so a courier pushes each
    id once per connection. Empty for an item about one message (`receipts` covers both).
    """

    seq: int
    owner: str
    kind: ItemKind
    message_id: int
    peer: str = ""
    text: str = ""
    key: str = ""
    sent_at: float = 0.0
    attachment: AttachmentInfo | None = None
    after: int = 0
    ids: tuple[tuple[int, str], ...] = ()

    @property
    def receipts(self) -> tuple[tuple[int, str], ...]:
        """(message_id, key) of every message this receipt is about."""
        return self.ids or ((self.message_id, self.key),)

    @property
    def sender(self) -> str:
        return self.peer if self.kind is ItemKind.MESSAGE else self.owner


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message of a conversation, as history shows it."""

    sender: str
    recipient: str
    message_id: int
    text: str
    sent_at: float
    delivered_at: float | None
    read_at: float | None
    attachment: AttachmentInfo | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    """A user online at a node: the node that pushes to them (exactly one per user)."""

    alias: str
    node: str
    #: a classic user (pushes dialled back to `address`, host:port) rather than a session connection
    classic: bool
    address: str = ""


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """The store at a glance, for operators (`GET /admin/summary`, the metrics' gauges)."""

    users: int
    #: messages stored and not delivered yet, and their bytes (text and attachments)
    stored_messages: int
    stored_bytes: int
    #: when the oldest undelivered message was sent (seconds since the epoch), None if there is none
    oldest_undelivered: float | None
    #: bytes the store takes on disk (SQLite: the database and its WAL; PostgreSQL: the database)
    size_bytes: int


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as an operator sees them (`dmds admin users`, `GET /admin/users`)."""

    alias: str
    full_name: str
    #: when the account was made, ISO 8601 in UTC as the store keeps it
    registered_at: str
    #: messages stored for them and not delivered yet, and their bytes
    stored_messages: int
    stored_bytes: int
    #: registered with a password (the session protocol), not a classic user
    protected: bool
    blocked: bool
