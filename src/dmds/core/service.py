"""The one API every front-end calls: register, unregister, connect, disconnect, send, connected users.

Raises domain errors (`dmds.errors`) and knows nothing of wire formats. Presence lives in memory
(after a restart everyone starts disconnected); everything else lives in the store.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re

from dmds.core.delivery import Courier
from dmds.core.model import ItemKind, OutboxItem, User
from dmds.core.ports import Endpoint, Store
from dmds.errors import AlreadyConnected, DeliveryFailed, InvalidField, NotConnected, UnknownUser
from dmds.settings import DeliverySettings

log = logging.getLogger(__name__)


# classic.md: DD/MM/YYYY, as the original GUI writes it
_DATE = re.compile(r"(\d\d)/(\d\d)/(\d\d\d\d)", re.ASCII)


def check_alias(alias: str) -> None:
    if not alias:
        raise InvalidField("alias is empty")
    # Aliases are typed in commands and shown in lists: no spaces, no control characters.
    # isprintable() is False for every control and separator character except " ".
    if not alias.isprintable() or " " in alias:
        raise InvalidField("alias contains spaces or control characters")


def check_birth_date(text: str, today: datetime.date) -> None:
    # A regex and date() rather than strptime(), which costs tens of microseconds per REGISTER.
    match = _DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        day, month, year = (int(g) for g in match.groups())
        born = datetime.date(year, month, day)
    except ValueError:
        raise InvalidField(f"birth date {text!r} is not a date as DD/MM/YYYY") from None
    if born > today:
        raise InvalidField("birth date is in the future")


class Service:
    """Users, presence and delivery. One instance per server process."""

    def __init__(self, store: Store, delivery: DeliverySettings) -> None:
        self._store = store
        self._settings = delivery
        self._couriers: dict[str, Courier] = {}
        self._acks: set[asyncio.Task[None]] = set()

    # -- directory ----------------------------------------------------------------------------------

    async def register(self, full_name: str, alias: str, birth_date: str) -> None:
        check_alias(alias)
        if not full_name.strip():
            raise InvalidField("full name is empty")
        check_birth_date(birth_date, datetime.date.today())
        await self._store.register(User(alias=alias, full_name=full_name, birth_date=birth_date))
        log.debug("registered %s", alias)

    async def unregister(self, alias: str) -> None:
        await self._store.unregister(alias)
        courier = self._couriers.pop(alias, None)
        if courier is not None:
            await courier.stop()
        log.debug("unregistered %s", alias)

    # -- presence -----------------------------------------------------------------------------------

    async def connect(self, alias: str, endpoint: Endpoint) -> None:
        if alias in self._couriers:
            raise AlreadyConnected(alias)
        if not await self._store.user_exists(alias):
            raise UnknownUser(alias)
        if alias in self._couriers:  # a concurrent CONNECT won while we awaited the store
            raise AlreadyConnected(alias)
        courier = Courier(
            alias,
            endpoint,
            self._store,
            max_pending=self._settings.max_pending_pushes,
            on_pushed=self._pushed,
            on_failed=self._push_failed,
        )
        self._couriers[alias] = courier
        courier.start()
        log.info("connected %s at %s", alias, endpoint.describe())

    async def disconnect(self, alias: str) -> None:
        courier = self._couriers.pop(alias, None)
        if courier is None:
            if not await self._store.user_exists(alias):
                raise UnknownUser(alias)
            raise NotConnected(alias)
        await courier.stop()
        log.info("disconnected %s", alias)

    async def connected_users(self, alias: str) -> list[str]:
        if alias not in self._couriers:
            if not await self._store.user_exists(alias):
                raise UnknownUser(alias)
            raise NotConnected(alias)
        return list(self._couriers)

    def is_connected(self, alias: str) -> bool:
        return alias in self._couriers

    # -- messages -----------------------------------------------------------------------------------

    async def send(self, sender: str, recipient: str, text: str) -> int:
        """Store a message and return its id once it is committed; delivery follows."""
        if sender not in self._couriers:
            if not await self._store.user_exists(sender):
                raise UnknownUser(sender)
            raise NotConnected(sender)  # classic.md: a user must be connected to send
        item = await self._store.add_message(sender, recipient, text, self._settings.max_stored_messages)
        courier = self._couriers.get(recipient)
        if courier is not None:
            courier.offer(item)
        return item.message_id

    def _pushed(self, item: OutboxItem) -> None:
        task = asyncio.get_running_loop().create_task(self._record_delivery(item))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _record_delivery(self, item: OutboxItem) -> None:
        try:
            receipt = await self._store.delivered(item)
        except Exception:
            # The item stays stored and is pushed again on the next CONNECT: a duplicate, never a loss.
            log.exception("could not record the delivery of item %d to %s", item.seq, item.owner)
            return
        if item.kind is ItemKind.MESSAGE:
            log.debug("delivered message %d to %s", item.message_id, item.owner)
        if receipt is not None:
            courier = self._couriers.get(receipt.owner)
            if courier is not None:
                courier.offer(receipt)

    def _push_failed(self, courier: Courier, exc: DeliveryFailed) -> None:
        # classic.md: an undeliverable push leaves the item stored and the recipient disconnected.
        if self._couriers.get(courier.alias) is courier:
            del self._couriers[courier.alias]
        log.info(
            "push to %s at %s failed (%s); now disconnected", courier.alias, courier.endpoint.describe(), exc
        )

    async def close(self) -> None:
        couriers, self._couriers = list(self._couriers.values()), {}
        for courier in couriers:
            await courier.stop()
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
