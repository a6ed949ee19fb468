"""What the core needs from the outside, as Protocols: a store, and endpoints to push to.

Stores (`dmds.stores`) and front-ends (`dmds.transports`) implement these; the core imports neither.
"""

from __future__ import annotations

from typing import Protocol

from dmds.core.model import OutboxItem, User


class Store(Protocol):
    """Durable state. Every mutating call returns only after its change is committed."""

    async def register(self, user: User) -> None:
        """Raises AliasTaken."""

    async def unregister(self, alias: str) -> None:
        """Remove the user with every item stored for them. Raises UnknownUser."""

    async def user_exists(self, alias: str) -> bool: ...

    async def add_message(self, sender: str, recipient: str, text: str, max_stored: int) -> OutboxItem:
        """Store a message for `recipient` with the next per-recipient id.

        Raises UnknownUser if either user does not exist, LimitExceeded if the recipient already
        has `max_stored` undelivered messages.
        """

    async def pending(self, owner: str, after_seq: int, limit: int) -> list[OutboxItem]:
        """Items for `owner` with seq > after_seq, in seq order, at most `limit`."""

    async def delivered(self, item: OutboxItem) -> OutboxItem | None:
        """Remove a pushed item. For a message, also store a receipt for its sender (if they still
        exist) in the same commit and return it."""

    async def close(self) -> None: ...


class Endpoint(Protocol):
    """Where a connected user's pushes go (a classic listener, a session connection...)."""

    async def deliver(self, item: OutboxItem) -> None:
        """Hand one item over; raises DeliveryFailed if it could not be written."""

    def describe(self) -> str: ...
