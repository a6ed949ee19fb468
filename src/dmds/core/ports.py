"""What the core needs from the outside, as Protocols: a store, and endpoints to push to.

Stores (`dmds.stores`) and front-ends (`dmds.transports`) implement these; the core imports neither.
Times are seconds since the epoch, passed in by the core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from dmds.core.model import (
    AttachmentInfo,
    OutboxItem,
    Presence,
    SendCall,
    StoredMessage,
    StoreSummary,
    User,
    UserInfo,
    UserRecord,
)
from dmds.errors import DmdsError


class Store(Protocol):
    """Durable state. Every mutating call returns only after its change is committed.

    Rules for implementations: a call that raises a domain error has changed nothing; a read sees
    every change submitted before it (a courier's reload relies on it; see `pending`'s `ahead`);
    for each owner, outbox items become visible in `seq` order, even when several processes write
    (a courier reads the pages after the last seq it saw).
    """

    # -- users and accounts ---------------------------------------------------------------------------

    def register(self, user: User, password_hash: str | None = None) -> Awaitable[None]:
        """Raises AliasTaken."""

    async def unregister(self, alias: str) -> None:
        """Remove the user with every item stored for them, their sessions, and their uploads but for
        those attached to messages others keep. Raises UnknownUser."""

    async def user(self, alias: str) -> UserRecord | None: ...

    async def set_password(self, alias: str, password_hash: str) -> None:
        """Raises UnknownUser."""

    async def create_session(self, alias: str, token_hash: bytes, now: float, expires_at: float) -> None: ...

    async def session_user(self, token_hash: bytes, now: float) -> tuple[str, float] | None:
        """(alias, expires_at) of a live session token, or None (unknown, revoked or expired)."""

    async def revoke_sessions(self, alias: str, token_hash: bytes | None = None) -> None:
        """Revoke one session of `alias` (token_hash), or all of them (None)."""

    # -- messages -------------------------------------------------------------------------------------

    def add_message(
        self,
        sender: str,
        recipient: str,
        text: str,
        *,
        now: float,
        max_stored: int,
        max_stored_bytes: int,
        key: str | None = None,
        attachment: int = 0,
    ) -> Awaitable[tuple[OutboxItem, bool]]:
        """Store a message for `recipient` with the next per-recipient id; returns (item, new).

        With a `key` already used by `sender`, stores nothing and returns the first message's
        item with new=False. Raises UnknownUser if either user does not exist, LimitExceeded if
        the recipient already has `max_stored` undelivered messages or would pass `max_stored_bytes`
        of them, UnknownAttachment for an
        attachment that is not the sender's complete upload.
        """

    def add_messages(
        self, sender: str, sends: Sequence[SendCall], *, now: float, max_stored: int, max_stored_bytes: int
    ) -> Awaitable[list[tuple[OutboxItem, bool] | DmdsError]]:
        """`add_message` for each of `sends` (recipient, text, key; no attachments), in order, as
        one request: each result is what its own call would return, or the domain error it would
        raise (a refused one leaves nothing behind and does not stop the others)."""

    def pending(
        self, owner: str, after_seq: int, limit: int, *, ahead: bool = False
    ) -> Awaitable[list[OutboxItem]]:
        """Items for `owner` with seq > after_seq, in seq order, at most `limit`. A store may answer
        with a future, the job queued at once (a courier's next page then goes ahead of work that
        is only one task away from being queued, such as the acks of the page before).

        `ahead`: the caller has everything up to `after_seq` and is offered what is committed after
        it, so the read need not see changes submitted before it and not committed yet (the acks
        of the pages before, which concern seqs up to `after_seq` only); a store may then answer
        it ahead of them. Without it, the read sees every change submitted before it."""

    async def mark_delivered(
        self, owner: str, message_ids: list[int], now: float, offer_to: Callable[[str], bool] | None = None
    ) -> list[OutboxItem]:
        """Messages `owner` received: out of their outbox, delivered_at set, and a DELIVERED receipt
        stored for each sender that still exists. Returns the receipts. Unknown ids are ignored.
        With `offer_to`, a store may leave out the receipts of senders for whom it says False (they
        are stored: the caller would not offer them to anyone).

        A store may keep receipts as ranges (`OutboxItem.ids`): then each sender's receipt covers the
        messages from them that are delivered with none of theirs to `owner` undelivered before
        them, so a message acked out of order is receipted when the gap below it closes."""

    async def mark_read(self, owner: str, message_ids: list[int], now: float) -> list[OutboxItem]:
        """Messages `owner` read: read_at set (once), a READ receipt stored for each sender."""

    async def forget(self, receipts: list[OutboxItem]) -> None:
        """Receipts were pushed: forget them."""

    async def history(
        self, alias: str, peer: str, before: float, limit: int, max_bytes: int = 1 << 20
    ) -> list[StoredMessage]:
        """The conversation of `alias` and `peer`, newest first, sent before `before` (0: now): at
        most `limit` messages, and no more once their texts pass `max_bytes` (a page must fit a
        frame, and a request must not make the server hold more than that)."""

    async def purge(self, delivered_before: float) -> int:
        """Forget delivered messages older than the retention period; returns how many."""

    # -- attachments ----------------------------------------------------------------------------------

    async def start_upload(self, owner: str, name: str, media_type: str, size: int, now: float) -> int: ...

    async def append_upload(self, owner: str, upload: int, offset: int, data: bytes) -> int:
        """Append a chunk at `offset` (must be the current length); returns the new length.
        Raises UnknownAttachment, InvalidField (wrong offset or past the announced size)."""

    async def attachment(self, attachment_id: int) -> AttachmentInfo | None: ...

    async def read_attachment(self, reader: str, attachment_id: int, offset: int, length: int) -> bytes:
        """Raises UnknownAttachment unless `reader` uploaded it or received it in a message."""

    # -- operations -----------------------------------------------------------------------------------

    async def ping(self) -> None:
        """A trivial read through the store's queue: returns once the store answers (readiness)."""

    async def summary(self) -> StoreSummary:
        """Counts for operators. Costs about one index seek per user with messages waiting: for
        scrapes and admin requests, never per message."""

    # -- admin commands (the operator's, never the protocols') -----------------------------------------

    async def users(self, prefix: str, after: str, limit: int) -> list[UserInfo]:
        """Registered users whose alias starts with `prefix`, in alias order after `after`, at most
        `limit` (a page: the next one starts after the last alias of this one)."""

    async def user_info(self, alias: str) -> UserInfo | None: ...

    async def block(self, alias: str, now: float) -> bool:
        """Block `alias` (registered or not) and revoke its session tokens; with several nodes, take
        it offline everywhere. False if it was blocked already. Registering it raises Blocked."""

    async def unblock(self, alias: str) -> bool:
        """False if it was not blocked."""

    async def blocked(self, prefix: str, limit: int) -> list[tuple[str, float]]:
        """(alias, blocked_at) of the blocked aliases starting with `prefix`, in alias order."""

    async def close(self) -> None: ...


class Endpoint(Protocol):
    """Where a connected user's pushes go (a classic listener, a session connection...)."""

    #: True if the client confirms each message with an Ack, which then marks it delivered;
    #: False if writing it out counts as delivery (the classic protocol).
    confirms: bool

    #: True if `deliver_batch` takes a run of items at once (it only queues what it writes).
    batches: bool

    async def deliver(self, item: OutboxItem) -> None:
        """Hand one item over; raises DeliveryFailed if it could not be written."""

    def deliver_batch(self, items: list[OutboxItem]) -> None:
        """With `batches`: hand every item over, in order, or none (raises DeliveryFailed)."""

    def describe(self) -> str: ...

    def replaced(self) -> None:
        """The user connected again elsewhere: this endpoint no longer receives anything."""

    def typing(self, sender: str) -> None:
        """`sender` is typing to this user: shown if the client can, dropped otherwise."""

    def kicked(self, reason: DmdsError) -> None:
        """The operator ended this user's connection (`reason`: Kicked or Blocked): close it, saying
        why where the protocol can. The core has taken the user offline already."""


class PresenceWatcher(Protocol):
    """A subscriber to presence changes (a session connection that sent Subscribe)."""

    def presence_changed(self, alias: str, online: bool) -> None: ...


class Cluster(Protocol):
    """Several nodes serving one store: who is online where, and word of what the others stored.

    With one node (SQLite) there is no cluster and the core keeps presence alone. Changes made
    through `claim` and `release` are applied by the caller itself; `ClusterEvents` reports only
    the other nodes' changes (and the cluster's own takeovers)."""

    node_id: str

    async def start(self, events: ClusterEvents) -> None:
        """Join: from now on `events` hears of the other nodes (first a `cluster_resync`)."""

    async def claim(self, alias: str, classic: bool, address: str) -> None:
        """Record `alias` online at this node. A session claim takes over the user's entry wherever
        it is; a classic claim raises AlreadyConnected if the user is online anywhere."""

    async def release(self, alias: str, node: str | None = None) -> bool:
        """Take `alias` offline (only if this node's entry when `node` is given); True if it was."""

    async def close(self) -> None: ...


class ClusterEvents(Protocol):
    """What a cluster tells the core of the other nodes."""

    def cluster_woken(self, owners: Collection[str] | None) -> None:
        """Other nodes stored items for these owners (None: for anyone): couriers should look."""

    def cluster_presence(self, changes: list[tuple[str, Presence | None]]) -> None:
        """Users came online or moved (a Presence) or went offline (None), in order. An entry of
        this node that the core does not serve is a classic user taken over from a dead node."""

    def cluster_resync(self, entries: list[Presence]) -> None:
        """The whole presence table, after a lost connection or lease: what was missed."""

    def cluster_lost(self) -> None:
        """This node could not renew its lease: another may take its classic users; stop pushing."""
