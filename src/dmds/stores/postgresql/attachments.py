"""The PostgreSQL store's attachments: uploads in chunks (one row per chunk), reads by range.

Each function is a job's body, run by the engine in a batch's transaction on its connection.
"""

from __future__ import annotations

import asyncpg

from dmds.core.model import AttachmentInfo
from dmds.core.validation import check_chunk
from dmds.errors import UnknownAttachment, UnknownUser


async def start_upload(
    conn: asyncpg.Connection, owner: str, *, name: str, media_type: str, size: int, now: float
) -> int:
    found = await conn.fetchval(
        "INSERT INTO attachments (owner_id, name, media_type, size, complete, created_at)"
        " SELECT id, $1, $2, $3, $4, $5 FROM users WHERE alias = $6 RETURNING id",
        name,
        media_type,
        size,
        size == 0,
        now,
        owner,
    )
    if found is None:
        raise UnknownUser(owner)
    return int(found)


async def append_upload(conn: asyncpg.Connection, owner: str, upload: int, offset: int, data: bytes) -> int:
    row = await conn.fetchrow(
        "SELECT a.received, a.size, a.complete FROM attachments a"
        " JOIN users u ON u.id = a.owner_id WHERE a.id = $1 AND u.alias = $2 FOR UPDATE OF a",
        upload,
        owner,
    )
    if row is None or row[2]:
        raise UnknownAttachment(f"upload {upload}")
    size = int(row[1])
    new_length = check_chunk(offset, int(row[0]), size, len(data))
    if data:
        await conn.execute(
            "INSERT INTO attachment_chunks (attachment_id, start, data) VALUES ($1, $2, $3)",
            upload,
            offset,
            data,
        )
    await conn.execute(
        "UPDATE attachments SET received = $1, complete = $2 WHERE id = $3",
        new_length,
        new_length == size,
        upload,
    )
    return new_length


async def attachment(conn: asyncpg.Connection, attachment_id: int) -> AttachmentInfo | None:
    row = await conn.fetchrow(
        "SELECT name, media_type, size FROM attachments WHERE id = $1 AND complete", attachment_id
    )
    return None if row is None else AttachmentInfo(attachment_id, *row)


async def read_attachment(
    conn: asyncpg.Connection, reader: str, attachment_id: int, offset: int, length: int
) -> bytes:
    allowed = await conn.fetchval(
        "SELECT 1 FROM attachments a WHERE a.id = $1 AND a.complete AND ("
        " a.owner_id = (SELECT id FROM users WHERE alias = $2) OR EXISTS (SELECT 1 FROM messages m"
        "  WHERE m.attachment_id = a.id AND m.recipient_alias = $2))",
        attachment_id,
        reader,
    )
    if allowed is None:
        raise UnknownAttachment(f"attachment {attachment_id}")
    rows = await conn.fetch(
        "SELECT start, data FROM attachment_chunks WHERE attachment_id = $1"
        " AND start + length(data) > $2 AND start < $3 ORDER BY start",
        attachment_id,
        offset,
        offset + length,
    )
    out = bytearray()
    for start, data in rows:
        out += data[max(0, offset - start) : offset + length - start]
    return bytes(out)
