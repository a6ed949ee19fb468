"""The events of the session client and how they reach the application.

An event is what the server pushes (`Message`, `Delivered`, `Read`, `PresenceChanged`, the
protocol's frames) or what happens to the connection (`Disconnected`, `Reconnected`). `EventStream`
hands them over one of two ways, chosen once at `SessionClient.connect`: with `on_event=callback`,
each is passed to the callback in the event loop, in the order it arrived, as soon as it arrived (the
callback must not block; it may start tasks); without, each is queued for ``async for event in
client.events()``, which ends when the client is closed or its connection is lost for good.

A `Message` is acknowledged to the server (an Ack frame, which makes it count as delivered and sends
the sender its `Delivered` receipt) once it has been handed over: after the callback returned, or
once it is in the queue; the Acks of one loop pass travel as one Ack frame. `SeenWindow` remembers
the messages already handed over, so that one pushed again (its Ack lost with a connection) is
acknowledged again but not handed twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from dmds.protocols.session.frames import Delivered, Message, PresenceChanged, Read

__all__ = [
    "SEEN_WINDOW",
    "Disconnected",
    "Event",
    "EventCallback",
    "EventStream",
    "Reconnected",
    "SeenWindow",
]

# The client's log lines all go to the logger of its public module, whichever part writes them.
log = logging.getLogger("dmds.client.session")

#: Message ids remembered as already handed to the application (a re-pushed one is not handed again).
SEEN_WINDOW: Final = 10_000


@dataclass(frozen=True, slots=True)
class Disconnected:
    """Event: the connection dropped. With `reconnecting` the client is getting it back; without,
    the client is closed and this is the last event."""

    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Event: the connection is back, the session resumed and pending requests sent again."""


Event: TypeAlias = Message | Delivered | Read | PresenceChanged | Disconnected | Reconnected
EventCallback: TypeAlias = Callable[[Event], None]


class EventStream:
    """The events, in order: each passed to `on_event` as it comes, or without it queued for `read()`."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._ended = False

    def emit(self, event: Event) -> None:
        if self.on_event is None:
            self._queue.put_nowait(event)
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event failed on %r", event)

    def end(self) -> None:
        """No more events: `read()` ends once it has read those queued."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    async def read(self) -> AsyncIterator[Event]:
        if self.on_event is not None:
            raise RuntimeError("this client hands its events to on_event")
        while True:
            event = await self._queue.get()
            if event is None:
                self._queue.put_nowait(None)  # any other reader ends too
                return
            yield event


class SeenWindow:
    """The ids of the last `SEEN_WINDOW` messages handed to the application."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def first_time(self, message_id: int) -> bool:
        """True, and remembered, if `message_id` was not seen yet."""
        if message_id in self._ids:
            return False
        self._ids.add(message_id)
        self._order.append(message_id)
        if len(self._order) > SEEN_WINDOW:
            self._ids.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        self._ids.clear()
        self._order.clear()
