"""The desktop client's conversations: messages grouped by peer, and delivery receipts matched to them.

Pure Python (no Qt), so that the rules below are tested on their own.

Receipts and their ambiguity
----------------------------
A SEND reply gives the id the server chose for the message, and the ``SEND_MESS_ACK`` receipt that
comes later carries that id and nothing else. Ids count *per recipient* (classic.md: the n-th
message ever accepted for a recipient has id n), so two messages sent to two different recipients
can have the same id, and a receipt for id n may belong to either. `Conversations` keeps, per id,
the list of sent messages not acknowledged yet, oldest first, and resolves a receipt as follows:

1. one pending message has that id: it is the one;
2. several do: prefer those whose recipient was in the latest connected-users list (a connected
   recipient gets the push at once, so its receipt comes at once, while a disconnected one gets
   it only on its next CONNECT), and among those (or among all, if none is connected) take the
   oldest.

A guess can be wrong only for a moment and only in the order of the marks, never in their number:
each recipient sends exactly one receipt per message, so once every receipt with id n has come,
every message with id n is marked, whichever got which mark first.

A receipt can also overtake the SEND reply it belongs to (they travel on different connections).
A receipt that matches nothing while a SEND is still waiting for its reply is held and matched
when that reply comes; once no SEND is waiting, held receipts are dropped: they acknowledge
messages sent before this window was opened (the server keeps receipts for a disconnected sender
and pushes them on its next CONNECT).

Session receipts
----------------
The session protocol's receipts (`Delivered`, `Read`) name the recipient as well as the id, and ids
are unique per recipient, so `session_receipt` matches them exactly, by (recipient, id): no guess.
A session receipt can overtake its `Accepted` on the way to the window too (the worker reports the
receipt as it is decoded, the answer once the sending coroutine resumes); it is held, by
(recipient, id), until the answer comes, and dropped, as above, once no SEND is waiting. A read
receipt marks a message READ, which includes delivered; a `Delivered` that comes after it changes
nothing.

Read marks going out
--------------------
`mark_read(peer)` returns the ids of the incoming messages it marked seen for the first time: the
session-mode window tells the server, so that their senders get a read receipt.
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["AttachedFile", "ChatMessage", "Conversations", "Direction", "Status", "human_size"]


def human_size(size: int) -> str:
    """A size in bytes as a person reads it: 812 bytes, 3.5 KiB, 10 MiB."""
    if size < 1024:
        return f"{size} byte" + ("" if size == 1 else "s")
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}".replace(".0 ", " ")


class Direction(enum.Enum):
    IN = "in"
    OUT = "out"


class Status(enum.Enum):
    """Where a message stands. Incoming messages are always RECEIVED."""

    SENDING = "sending"  # waiting for the SEND reply
    SENT = "sent"  # accepted by the server (it has an id), no receipt yet
    DELIVERED = "delivered"  # its receipt came
    READ = "read"  # the recipient read it (session protocol: its read receipt came)
    FAILED = "failed"  # not accepted; `error` says why
    RECEIVED = "received"


#: How far a sent message has come, to keep the furthest of receipts that come out of order.
_PROGRESS: dict[Status, int] = {Status.SENT: 0, Status.DELIVERED: 1, Status.READ: 2}


@dataclass(frozen=True)
class AttachedFile:
    """A file carried by a message (session protocol). `attachment_id` is 0 until it is uploaded."""

    attachment_id: int
    name: str
    size: int
    media_type: str = ""


@dataclass
class ChatMessage:
    """One message of a conversation, as this window saw it."""

    local_id: int
    peer: str
    direction: Direction
    text: str
    time: datetime
    status: Status
    message_id: int | None = None
    error: str = ""
    attachment: AttachedFile | None = None
    #: incoming only: its conversation has been on screen since it came
    seen: bool = False


@dataclass
class _Conversation:
    messages: list[ChatMessage] = field(default_factory=list)
    unread: int = 0
    last_activity: int = 0


class Conversations:
    """Every conversation of the window, keyed by peer alias, and the receipts still expected."""

    def __init__(self) -> None:
        self._by_peer: dict[str, _Conversation] = {}
        self._by_local_id: dict[int, ChatMessage] = {}
        # message id -> sent messages with that id and no receipt yet, oldest first
        self._pending: dict[int, list[ChatMessage]] = {}
        # receipts that came while a SEND was waiting for its reply (see the module docstring)
        self._early: Counter[int] = Counter()
        # session protocol: sent messages by (recipient, id), and receipts that overtook their reply
        self._sent: dict[tuple[str, int], ChatMessage] = {}
        self._early_session: dict[tuple[str, int], Status] = {}
        self._sending = 0
        self._local_ids = itertools.count(1)
        self._activity = itertools.count(1)

    # -- reading ------------------------------------------------------------------------------------

    def peers(self) -> list[str]:
        """The peers with a conversation, the most recently active first."""
        return sorted(self._by_peer, key=lambda peer: -self._by_peer[peer].last_activity)

    def messages(self, peer: str) -> list[ChatMessage]:
        """The messages exchanged with `peer`, oldest first (empty if none)."""
        conversation = self._by_peer.get(peer)
        return list(conversation.messages) if conversation else []

    def unread(self, peer: str) -> int:
        conversation = self._by_peer.get(peer)
        return conversation.unread if conversation else 0

    def mark_read(self, peer: str) -> list[int]:
        """The conversation with `peer` is on screen: nothing in it is unread any more.

        Returns the ids of the incoming messages seen now for the first time (oldest first).
        """
        conversation = self._by_peer.get(peer)
        if conversation is None:
            return []
        conversation.unread = 0
        fresh = [m for m in conversation.messages if m.direction is Direction.IN and not m.seen]
        for message in fresh:
            message.seen = True
        return [m.message_id for m in fresh if m.message_id is not None]

    def attachment(self, attachment_id: int) -> AttachedFile | None:
        """The file of that id, carried by a message of any conversation (None if unknown)."""
        for conversation in self._by_peer.values():
            for message in conversation.messages:
                found = message.attachment
                if found is not None and found.attachment_id == attachment_id:
                    return found
        return None

    def pending_receipts(self) -> int:
        """Sent messages still waiting for their receipt."""
        return sum(len(waiting) for waiting in self._pending.values())

    # -- changes ------------------------------------------------------------------------------------

    def _conversation(self, peer: str) -> _Conversation:
        conversation = self._by_peer.setdefault(peer, _Conversation())
        conversation.last_activity = next(self._activity)
        return conversation

    def open(self, peer: str) -> None:
        """Make sure a (possibly empty) conversation with `peer` exists."""
        if peer not in self._by_peer:
            self._conversation(peer)

    def add_outgoing(
        self, peer: str, text: str, now: datetime, attachment: AttachedFile | None = None
    ) -> ChatMessage:
        """A message being sent to `peer` (status SENDING until `accepted` or `failed`)."""
        message = ChatMessage(
            next(self._local_ids), peer, Direction.OUT, text, now, Status.SENDING, attachment=attachment
        )
        self._conversation(peer).messages.append(message)
        self._by_local_id[message.local_id] = message
        self._sending += 1
        return message

    def _reply_came(self) -> None:
        self._sending -= 1
        if self._sending == 0:
            self._early.clear()
            self._early_session.clear()

    def accepted(
        self, local_id: int, message_id: int, text: str, attachment: AttachedFile | None = None
    ) -> ChatMessage:
        """The server accepted the message, gave it `message_id`; `text` is what was sent, and
        `attachment` the file as uploaded (if any)."""
        message = self._by_local_id[local_id]
        message.message_id, message.text = message_id, text
        if attachment is not None:
            message.attachment = attachment
        self._sent[(message.peer, message_id)] = message
        early = self._early_session.pop((message.peer, message_id), None)
        if early is not None:
            message.status = early
        elif self._early[message_id] > 0:
            self._early[message_id] -= 1
            message.status = Status.DELIVERED
        else:
            message.status = Status.SENT
            self._pending.setdefault(message_id, []).append(message)
        self._reply_came()
        return message

    def failed(self, local_id: int, error: str) -> ChatMessage:
        """The message was not accepted; `error` says why, for a person."""
        message = self._by_local_id[local_id]
        message.status, message.error = Status.FAILED, error
        self._reply_came()
        return message

    def add_incoming(
        self,
        sender: str,
        message_id: int,
        text: str,
        now: datetime,
        *,
        read: bool,
        attachment: AttachedFile | None = None,
    ) -> ChatMessage:
        """A message pushed by the server; `read` if its conversation is on screen (it still counts
        as not `seen` until the next `mark_read` of its peer, which reports it)."""
        message = ChatMessage(
            next(self._local_ids),
            sender,
            Direction.IN,
            text,
            now,
            Status.RECEIVED,
            message_id,
            attachment=attachment,
        )
        conversation = self._conversation(sender)
        conversation.messages.append(message)
        if not read:
            conversation.unread += 1
        return message

    def receipt(self, message_id: int, connected: Collection[str] = ()) -> ChatMessage | None:
        """A receipt for `message_id`: the message it marks delivered, or None if it matches none yet.

        `connected` is the latest connected-users list, used when several recipients have a
        message with this id pending (see the module docstring).
        """
        waiting = self._pending.get(message_id)
        if not waiting:
            if self._sending:
                self._early[message_id] += 1
            return None
        online = [message for message in waiting if message.peer in connected]
        message = (online or waiting)[0]
        waiting.remove(message)
        if not waiting:
            del self._pending[message_id]
        message.status = Status.DELIVERED
        self._sent.pop((message.peer, message_id), None)  # classic receipts end here
        return message

    def session_receipt(self, to: str, message_id: int, *, read: bool) -> ChatMessage | None:
        """A session receipt: message `message_id` to `to` was delivered (or `read`).

        Returns the message it marks, or None if it matches none (yet: see the module docstring).
        """
        status = Status.READ if read else Status.DELIVERED
        message = self._sent.get((to, message_id))
        if message is None:
            if self._sending:
                held = self._early_session.get((to, message_id), Status.SENT)
                self._early_session[(to, message_id)] = max(held, status, key=_PROGRESS.__getitem__)
            return None
        waiting = self._pending.get(message_id)
        if waiting is not None and message in waiting:  # not left for a classic receipt to take
            waiting.remove(message)
            if not waiting:
                del self._pending[message_id]
        if _PROGRESS.get(message.status, 0) < _PROGRESS[status]:
            message.status = status
        if status is Status.READ:
            del self._sent[(to, message_id)]  # nothing further can come for it
        return message
