"""What the session requests that need the core do: each answered by one function of the connection.

The connection (`session_connection.py`) handles the frames that need no store itself (Hello, Ping,
Ack, the hot path of Send) and hands every other request here, in a task of its own; `answer` returns
the frame to send back or raises the domain error that the connection turns into an Error frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from dmds.errors import AlreadyConnected, InvalidField, NotConnected
from dmds.protocols.session import frames as f

if TYPE_CHECKING:
    from dmds.transports.session_connection import SessionConnection

# The session server's records keep one logger name, which operators filter on (docs/operations.md).
log = logging.getLogger("dmds.transports.session_server")

#: Most bytes answered by one Fetch.
MAX_FETCH_BYTES = 256 * 1024
#: Room in a frame for everything but the entries of a history page.
_PAGE_OVERHEAD = 64


async def answer(conn: SessionConnection, frame: Any) -> f.Frame:
    """The answer to a request that needs the core: what it returns, or a domain error it raises."""
    svc = conn.service
    rid = frame.id
    if isinstance(frame, f.Register):
        await svc.register(frame.full_name, frame.alias, frame.birth_date, frame.password, conn.peer)
        return f.Ok(re=rid)
    if isinstance(frame, f.Login):
        return await login(conn, frame)
    alias = conn.alias
    if alias is None:
        raise NotConnected("log in first")
    if isinstance(frame, f.Send):
        if len(frame.text.encode()) > conn.server.max_text_bytes:
            raise InvalidField(f"text longer than {conn.server.max_text_bytes} bytes")
        item = await svc.send(alias, frame.to, frame.text, key=frame.key, attachment=frame.attachment)
        # item.owner: for a resent key, the recipient of the first message with that key
        return f.Accepted(re=rid, to=item.owner, key=frame.key, message_id=item.message_id)
    if isinstance(frame, f.Subscribe):
        conn.subscribed = True
        return f.Presence(re=rid, online=svc.subscribe(conn))
    if isinstance(frame, f.History):
        max_bytes = conn.server.settings.max_frame_bytes
        # One History at a time per connection: pipelined pages from one client must not fill
        # the store's queue ahead of everyone else's sends, nor hold many pages in memory.
        if conn.history_lock is None:
            conn.history_lock = asyncio.Lock()
        async with conn.history_lock:
            if conn.closing():
                # Pipelined pages of a connection that is gone: nobody will read them.
                raise NotConnected("connection closed")
            entries = await svc.history(alias, frame.peer, frame.before, frame.limit, max_bytes)
        return history_page(
            rid,
            [
                f.HistoryEntry(
                    sender=e.sender,
                    recipient=e.recipient,
                    message_id=e.message_id,
                    text=e.text,
                    sent_at=e.sent_at,
                    delivered_at=e.delivered_at or 0.0,
                    read_at=e.read_at or 0.0,
                    attachment=attachment_frame(e.attachment),
                )
                for e in entries
            ],
            full=len(entries) == frame.limit,
            max_bytes=max_bytes,
        )
    if isinstance(frame, f.UploadStart):
        upload = await svc.start_upload(alias, frame.name, frame.media_type, frame.size)
        return f.UploadReady(re=rid, upload=upload, offset=0, attachment=upload if frame.size == 0 else 0)
    if isinstance(frame, f.UploadChunk):
        length, attachment = await svc.append_upload(alias, frame.upload, frame.offset, frame.data)
        return f.UploadReady(re=rid, upload=frame.upload, offset=length, attachment=attachment)
    if isinstance(frame, f.Fetch):
        info = await svc.attachment(frame.attachment)
        data = await svc.read_attachment(
            alias, frame.attachment, frame.offset, min(frame.length, MAX_FETCH_BYTES)
        )
        return f.Chunk(re=rid, attachment=frame.attachment, offset=frame.offset, data=data, size=info.size)
    if isinstance(frame, f.Logout):
        await svc.logout(alias, conn.token)
        await conn.leave()
        return f.Ok(re=rid)
    if isinstance(frame, f.ChangePassword):
        await svc.change_password(alias, frame.old_password, frame.new_password, conn.peer)
        return f.Ok(re=rid)
    if isinstance(frame, f.DeleteAccount):
        await svc.delete_account(alias, frame.password, conn.peer)
        await conn.leave()
        return f.Ok(re=rid)
    raise InvalidField(f"unexpected frame {type(frame).__name__}")  # pragma: no cover - the decoder's union


async def login(conn: SessionConnection, frame: f.Login) -> f.Frame:
    if conn.alias is not None:
        raise AlreadyConnected("already logged in on this connection")
    svc = conn.service
    if frame.token:
        alias, expires = await svc.resume(frame.token)
        token = frame.token
    else:
        token, expires = await svc.login(frame.alias, frame.password, conn.peer)
        alias = frame.alias
    if conn.closing():
        # The client gave up on this connection while its password was checked (it timed out,
        # say, and logged in again elsewhere): this stale login must not take that one over.
        raise NotConnected("connection closed")
    await svc.connect(alias, conn)
    conn.alias, conn.token = alias, token
    log.info("session login %s from %s", alias, conn.peer, extra={"alias": alias, "peer": conn.peer})
    return f.LoggedIn(re=frame.id, alias=alias, token=token, expires_at=expires)


def history_page(rid: int, entries: list[f.HistoryEntry], *, full: bool, max_bytes: int) -> f.HistoryPage:
    """A page that fits in one frame: entries that would pass max_frame_bytes wait for the next page."""
    size, kept = _PAGE_OVERHEAD, list[f.HistoryEntry]()
    for entry in entries:
        size += len(msgspec.msgpack.encode(entry))
        if size > max_bytes and kept:
            return f.HistoryPage(re=rid, entries=kept, more=True)
        kept.append(entry)
    return f.HistoryPage(re=rid, entries=kept, more=full)


def attachment_frame(info: Any) -> f.Attachment | None:
    if info is None:
        return None
    return f.Attachment(info.attachment_id, info.name, info.media_type, info.size)
