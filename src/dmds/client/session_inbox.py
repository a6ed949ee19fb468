"""Where each frame the server sends the session client goes: pushes become events, answers go to
the requests waiting for them.

A `Message` (or each of a `Messages` page) is handed to the application once, however often it is
pushed (`SeenWindow`), and acknowledged each time it comes; `PresenceChanged` keeps `online`
current before it is handed over; any other frame is an answer, for the outbox.
"""

from __future__ import annotations

from typing import Any

from dmds.client.session_events import EventStream, SeenWindow
from dmds.client.session_link import Link
from dmds.client.session_outbox import Outbox
from dmds.protocols.session import frames as f

__all__ = ["Inbox"]


class Inbox:
    """Takes the frames of every link (`on_frame`) and hands them to `events` or `outbox`."""

    def __init__(self, events: EventStream, outbox: Outbox) -> None:
        self._events = events
        self._outbox = outbox
        #: the messages already handed over (cleared when another user logs in: ids are per mailbox)
        self.seen = SeenWindow()
        #: who is online, as far as the PresenceChanged pushes tell
        self.online: set[str] = set()

    def on_frame(self, link: Link, frame: Any) -> None:
        if isinstance(frame, f.Message):
            self._on_message(link, frame)
        elif isinstance(frame, f.Messages):  # version 2: a page, each as if pushed alone
            for message in frame.messages:
                self._on_message(link, message)
        elif isinstance(frame, f.Delivered | f.Read):
            self._events.emit(frame)
        elif isinstance(frame, f.PresenceChanged):
            if frame.online:
                self.online.add(frame.alias)
            else:
                self.online.discard(frame.alias)
            self._events.emit(frame)
        else:
            self._outbox.answer(link, frame)

    def _on_message(self, link: Link, message: f.Message) -> None:
        if self.seen.first_time(message.message_id):
            self._events.emit(message)
        link.ack(message.message_id)
