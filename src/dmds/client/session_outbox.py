"""The requests of the session client waiting for their answers, and the notes waiting for a link.

Each request carries a fresh id; its future waits in the outbox, keyed by id, until the frame with
that id in `re` arrives (the answer, or an Error). When a connection drops, the requests that may
safely be sent twice stay (`REPLAYABLE`: a Send's key makes the server answer a resend with the id
of the first and never deliver it twice; History and Fetch are reads) and every other request
written on it fails with `ConnectionLost`: whether it took effect is unknown. Notes are the Acks and
MarkReads not yet written; they are kept for the next connection, where `resend` writes everything
in the order it was first made.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from dmds.client.session_errors import ConnectionLost, SessionError
from dmds.client.session_link import Link
from dmds.protocols.session import frames as f

__all__ = ["REPLAYABLE", "Outbox"]

# The client's log lines all go to the logger of its public module, whichever part writes them.
log = logging.getLogger("dmds.client.session")

#: Requests that are safe to send again on a new connection.
REPLAYABLE: Final = (f.Send, f.History, f.Fetch)

_MAX_REQUEST_ID: Final = 2**32 - 1


@dataclass(eq=False, slots=True)
class _Request:
    frame: Any  # a request frame: it has `id`
    future: asyncio.Future[f.Frame]
    sent_on: Link | None = None


class Outbox:
    """The pending requests, in the order they were made, and the notes to write on the next link."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._notes: list[f.Frame] = []

    def next_id(self) -> int:
        rid = next(self._ids)
        if rid > _MAX_REQUEST_ID:
            self._ids = itertools.count(2)
            rid = 1
        return rid

    async def call(self, frame: Any, link: Link | None) -> f.Frame:
        """Keep `frame` pending until its answer comes, and return the answer (SessionError if it is
        an Error); it is written on `link` now, or without one on the next connection."""
        request = _Request(frame, self._loop.create_future())
        self._pending[frame.id] = request
        if link is not None:
            self._write(request, link)
        try:
            return await request.future
        finally:
            # Answered, failed or cancelled by the caller: it is no longer pending (and a cancelled
            # Send is not sent again).
            if self._pending.get(frame.id) is request:
                del self._pending[frame.id]
            # A failure's traceback holds this frame; were it to hold the future that holds the
            # failure, the caller's frames would live on in a cycle until the cyclic GC runs (in any
            # thread: a problem for Qt callers).
            del request

    def answer(self, link: Link, frame: Any) -> None:
        """Settle the request `frame` answers, if it was written on `link` and is still pending."""
        rid = getattr(frame, "re", 0)
        request = self._pending.get(rid)
        if request is None or request.sent_on is not link:
            log.debug("answer to no pending request: %r", frame)
            return
        del self._pending[rid]
        if request.future.done():
            return
        if isinstance(frame, f.Error):
            request.future.set_exception(SessionError(frame.code, frame.message, frame.retry_after_s))
        else:
            request.future.set_result(frame)

    def note(self, frame: f.Frame) -> None:
        """Keep an Ack or MarkRead to write on the next connection."""
        self._notes.append(frame)

    def link_dropped(self, link: Link) -> None:
        """`link` dropped and another will follow: fail what cannot be sent again, keep the rest
        and the notes it never wrote."""
        self._fail(lambda req: req.sent_on is link and not isinstance(req.frame, REPLAYABLE), link.reason)
        self._notes.extend(link.unsent_notes())

    def resend(self, link: Link) -> None:
        """Write every pending request, in the order they were made, then the notes, on `link`."""
        for request in list(self._pending.values()):
            self._write(request, link)
        notes, self._notes = self._notes, []
        for note in notes:
            link.queue(note)

    def fail_written_on(self, link: Link, reason: str) -> None:
        self._fail(lambda req: req.sent_on is link, reason)

    def fail_all(self, reason: str) -> None:
        self._fail(lambda req: True, reason)

    def _fail(self, which: Callable[[_Request], bool], reason: str) -> None:
        for rid, request in list(self._pending.items()):
            if which(request):
                del self._pending[rid]
                if not request.future.done():
                    request.future.set_exception(ConnectionLost(reason))

    def _write(self, request: _Request, link: Link) -> None:
        request.sent_on = link
        link.queue(request.frame)
