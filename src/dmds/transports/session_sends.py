"""The session server's hot path: Send frames to the core, and an Accepted or Error frame back for each.

Sends that arrive together (a client pipelining them: one read holds many) go to the core as one run
(`Service.send_many_nowait`): one store job, one future and one callback for the run instead of one
of each per message. Each Send still gets its own answer, in the order of the store's results, and a
refused one holds none of the others back. No task per message: the future's callback answers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dmds.core.model import OutboxItem, SendCall
from dmds.errors import DmdsError, InvalidField
from dmds.protocols.session import frames as f

if TYPE_CHECKING:
    from dmds.transports.session_connection import SessionConnection

#: Sends handled as one run at most: a run is one store job, and a batch's jobs share a transaction.
MAX_RUN = 256


def send_run(conn: SessionConnection, run: list[f.Send]) -> None:
    """Hand `run` (Sends without attachments, from a logged-in connection) to the core."""
    alias = conn.alias
    if alias is None:
        return
    limit = conn.server.max_text_bytes
    sends: list[SendCall] = []
    frames: list[f.Send] = []
    for frame in run:
        text = frame.text
        # A UTF-8 character is at most 4 bytes: most texts need no encoding to be measured.
        if len(text) * 4 > limit and len(text.encode()) > limit:
            conn.queue(conn.error_frame(frame, InvalidField(f"text longer than {limit} bytes")))
            continue
        sends.append((frame.to, text, frame.key))
        frames.append(frame)
    if not frames:
        return
    try:
        accepted = conn.service.send_many_nowait(alias, sends)
    except Exception as exc:  # noqa: BLE001 - answered; `error_frame` logs whatever is not a domain error
        for frame in frames:
            conn.queue(conn.error_frame(frame, exc))
        return
    conn.begin_requests(len(frames))
    started = conn.loop.time() if conn.server.send_latency is not None else 0.0
    accepted.add_done_callback(lambda fut: _answer(conn, frames, fut, started))


def _answer(
    conn: SessionConnection,
    frames: list[f.Send],
    fut: asyncio.Future[list[OutboxItem | DmdsError]],
    started: float,
) -> None:
    conn.end_requests(len(frames))
    if (latency := conn.server.send_latency) is not None:
        seconds = conn.loop.time() - started
        for _ in frames:
            latency.observe(seconds)
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        conn.queue_many([conn.error_frame(frame, exc) for frame in frames])
        return
    accepted = f.Accepted
    # result.owner: for a resent key, the recipient of the first message with that key
    conn.queue_many(
        [
            conn.error_frame(frame, result)
            if isinstance(result, DmdsError)
            else accepted(re=frame.id, to=result.owner, key=frame.key, message_id=result.message_id)
            for frame, result in zip(frames, fut.result(), strict=True)
        ]
    )
