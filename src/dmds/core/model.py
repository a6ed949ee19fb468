"""The core's values: what is stored and delivered."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ItemKind(enum.IntEnum):
    """What an outbox item carries to its owner. Stored as this number: do not renumber."""

    MESSAGE = 1
    RECEIPT = 2


@dataclass(frozen=True, slots=True)
class User:
    alias: str
    full_name: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One thing waiting to be pushed to `owner`: a message to them, or a receipt for one they sent.

    `seq` orders every item of the store (and so every item of one owner); `message_id` is the
    per-recipient message id (for a receipt: the id the recipient's server gave the message).
    """

    seq: int
    owner: str
    kind: ItemKind
    message_id: int
    sender: str = ""
    text: str = ""
