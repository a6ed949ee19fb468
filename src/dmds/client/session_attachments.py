"""Attachments over the session protocol: an upload in chunks sized to the server's frames, and a
fetch in chunks until the whole content has come."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from dmds.client.session_errors import SessionClientError, expect
from dmds.protocols.session import frames as f
from dmds.protocols.session.frames import Welcome

__all__ = ["FETCH_CHUNK_BYTES", "FRAME_OVERHEAD_BYTES", "UPLOAD_CHUNK_BYTES", "fetch", "upload"]

#: Bytes of an attachment per UploadChunk (less if the server's max_frame_bytes requires).
UPLOAD_CHUNK_BYTES: Final = 256 * 1024
#: Bytes asked for per Fetch (the server answers at most 256 KiB).
FETCH_CHUNK_BYTES: Final = 256 * 1024
#: Room left in a frame for the fields of an UploadChunk other than its data.
FRAME_OVERHEAD_BYTES: Final = 1024


#: Send a request (a frame class and its fields) and return its answer: `SessionClient._call`.
Call: TypeAlias = Callable[..., Awaitable[f.Frame]]


async def upload(
    call: Call, welcome: Welcome, name: str, media_type: str, data: bytes, *, chunk_size: int
) -> int:
    """Upload `data`; returns the attachment's id. ValueError if the server's limit forbids it."""
    if len(data) > welcome.max_attachment_bytes:
        raise ValueError(f"attachment larger than the server's {welcome.max_attachment_bytes} bytes")
    step = max(1, min(chunk_size, welcome.max_frame_bytes - FRAME_OVERHEAD_BYTES))
    ready = expect(await call(f.UploadStart, name=name, media_type=media_type, size=len(data)), f.UploadReady)
    view = memoryview(data)
    while ready.offset < len(data):
        piece = bytes(view[ready.offset : ready.offset + step])
        answer = await call(f.UploadChunk, upload=ready.upload, offset=ready.offset, data=piece)
        ready = expect(answer, f.UploadReady)
    if not ready.attachment:
        raise SessionClientError(f"upload {ready.upload} not complete at {ready.offset} bytes")
    return ready.attachment


async def fetch(call: Call, attachment_id: int) -> bytes:
    """The whole content of an attachment."""
    parts: list[bytes] = []
    offset, size = 0, -1
    while offset < size or size < 0:
        answer = await call(f.Fetch, attachment=attachment_id, offset=offset, length=FETCH_CHUNK_BYTES)
        chunk = expect(answer, f.Chunk)
        size = chunk.size
        if not chunk.data and offset < size:
            raise SessionClientError(f"attachment {attachment_id} ended at {offset} of {size} bytes")
        parts.append(chunk.data)
        offset += len(chunk.data)
    return b"".join(parts)
