"""PostgreSQL store: the `Store` port on a database that several nodes share.

Unlike the SQLite store, nothing is cached: another node may change any row at any time. What must
be exact across nodes is made so by the database: per-recipient message ids are advanced in the
recipient's users row under its lock (gap-free and in commit order), idempotent keys are a unique
index, and every outbox `seq` is taken while its owner's row is locked (see migrations/001). The
message path's two hot statements are PL/pgSQL functions, so a batch of messages is one round trip.
Batching and notification are the engine's (`engine.py`).

The shape is SQLite's (migrations/005): what waits for a user comes from three places merged in one
`seq` order, each read through an index of what waits: their undelivered messages (one row per
message, the partial index messages_undelivered), their delivery receipts as ranges (one `receipts`
row per recipient they wrote to, "delivered: ids in (pushed, upto]"), and their read receipts (one
outbox row each, as are delivery receipts written by schema 4).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from dmds.core.model import (
    AttachmentInfo,
    ItemKind,
    OutboxItem,
    SendCall,
    StoredMessage,
    StoreSummary,
    User,
    UserInfo,
    UserRecord,
)
from dmds.errors import (
    AliasTaken,
    Blocked,
    DmdsError,
    LimitExceeded,
    UnknownAttachment,
    UnknownUser,
)
from dmds.settings import StoreSettings
from dmds.stores.postgresql import admin, attachments
from dmds.stores.postgresql import summary as operator
from dmds.stores.postgresql.engine import Batch, Engine, connect, migrate

log = logging.getLogger(__name__)

_KINDS = {kind.value: kind for kind in ItemKind}
MESSAGE, DELIVERED, READ = ItemKind.MESSAGE, ItemKind.DELIVERED, ItemKind.READ

# What waits for an owner ($1), after a seq ($2), at most $3: the undelivered messages to them, their
# receipt outbox rows (read receipts, and delivery receipts of schema 4) and their delivery receipt
# ranges with the messages each covers, merged in seq order. Each side is limited first, so a page
# reads at most $3 rows of each. Rows: seq, kind, message_id, peer, text, key, sent_at, the
# attachment's id, name, type and size, and a range's message ids and keys.
_PENDING = (
    "WITH me AS (SELECT id FROM users WHERE alias = $1)"
    " SELECT * FROM (SELECT m.seq, 1::smallint, m.message_id, m.sender_alias, m.text, m.client_key,"
    " m.sent_at, a.id, a.name, a.media_type, a.size, NULL::bigint[], NULL::text[] FROM messages m"
    " LEFT JOIN attachments a ON a.id = m.attachment_id"
    " WHERE m.recipient_id = (SELECT id FROM me) AND m.delivered_at IS NULL AND m.seq > $2"
    " ORDER BY m.seq LIMIT $3) waiting"
    " UNION ALL SELECT * FROM (SELECT o.seq, o.kind, o.message_id, m.recipient_alias, m.text, m.client_key,"
    " m.sent_at, NULL::bigint, NULL, NULL, NULL::bigint, NULL::bigint[], NULL::text[] FROM outbox o"
    " LEFT JOIN messages m ON m.id = o.ref"
    " WHERE o.owner_id = (SELECT id FROM me) AND o.seq > $2 ORDER BY o.seq LIMIT $3) single"
    " UNION ALL SELECT * FROM (SELECT r.seq, 2::smallint, 0::bigint, u.alias, '', '', 0::float8,"
    " NULL::bigint, NULL, NULL, NULL::bigint, c.ids, c.keys FROM receipts r JOIN users u ON u.id = r.peer_id"
    " CROSS JOIN LATERAL (SELECT array_agg(m.message_id ORDER BY m.message_id) AS ids,"
    "  array_agg(coalesce(m.client_key, '') ORDER BY m.message_id) AS keys FROM messages m"
    "  WHERE m.recipient_id = r.peer_id AND m.message_id > r.pushed AND m.message_id <= r.upto"
    "  AND m.sender_id = r.owner_id AND m.delivered_at IS NOT NULL) c"
    " WHERE r.owner_id = (SELECT id FROM me) AND r.upto > r.pushed AND r.seq > $2 AND c.ids IS NOT NULL"
    " ORDER BY r.seq LIMIT $3) ranges"
    " ORDER BY 1 LIMIT $3"
)


def _item(owner: str, row: asyncpg.Record) -> OutboxItem:
    seq, kind_value, message_id, peer, text, key, sent_at, att, name, media_type, size, ids, keys = row
    kind = _KINDS[kind_value]
    if ids is not None:
        # A range: its last message is the item's message_id (see OutboxItem.ids).
        covered = tuple(zip(ids, keys, strict=True))
        return OutboxItem(seq, owner, kind, covered[-1][0], peer, "", covered[-1][1], ids=covered)
    return OutboxItem(
        seq,
        owner,
        kind,
        message_id,
        peer or "",
        text or "",
        key or "",
        sent_at or 0.0,
        None if att is None else AttachmentInfo(att, name, media_type, size),
    )


class PostgresStore:
    """`dmds.core.ports.Store` on PostgreSQL: `await PostgresStore.open(url, settings, node_id)`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str, settings: StoreSettings, node_id: str) -> PostgresStore:
        conn = await connect(url, settings.store_connect_timeout_s)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        timeouts = settings.store_connect_timeout_s, settings.store_outcome_timeout_s
        engine = Engine(url, node_id, settings.max_batch, *timeouts)
        await engine.open()
        return cls(engine)

    async def close(self) -> None:
        await self.engine.close()

    async def ping(self) -> None:
        await self.engine.submit(operator.ping)

    async def summary(self) -> StoreSummary:
        found: StoreSummary = await self.engine.submit(operator.summary)
        return found

    # -- admin commands ----------------------------------------------------------------------------------

    async def users(self, prefix: str, after: str, limit: int) -> list[UserInfo]:
        found: list[UserInfo] = await self.engine.submit(
            lambda conn, batch: admin.users(conn, prefix, after, limit)
        )
        return found

    async def user_info(self, alias: str) -> UserInfo | None:
        found: UserInfo | None = await self.engine.submit(lambda conn, batch: admin.user_info(conn, alias))
        return found

    async def block(self, alias: str, now: float) -> bool:
        done: bool = await self.engine.submit(lambda conn, batch: admin.block(conn, batch, alias, now))
        return done

    async def unblock(self, alias: str) -> bool:
        done: bool = await self.engine.submit(lambda conn, batch: admin.unblock(conn, alias))
        return done

    async def blocked(self, prefix: str, limit: int) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = await self.engine.submit(
            lambda conn, batch: admin.blocked(conn, prefix, limit)
        )
        return found

    # -- users and accounts ------------------------------------------------------------------------------

    def register(self, user: User, password_hash: str | None = None) -> asyncio.Future[None]:
        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            # A blocked alias (schema 6) inserts nothing, and is told apart only then.
            found = await conn.fetchval(
                "INSERT INTO users (alias, full_name, birth_date, password_hash) SELECT $1, $2, $3, $4"
                " WHERE NOT EXISTS (SELECT 1 FROM blocked_aliases WHERE alias = $1)"
                " ON CONFLICT (alias) DO NOTHING RETURNING id",
                user.alias,
                user.full_name,
                user.birth_date,
                password_hash,
            )
            if found is None:
                if await conn.fetchval("SELECT 1 FROM blocked_aliases WHERE alias = $1", user.alias):
                    raise Blocked(f"{user.alias} is blocked")
                raise AliasTaken(user.alias)

        return self.engine.submit(job)

    async def unregister(self, alias: str) -> None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            uploads = await conn.fetchval(
                "SELECT coalesce(array_agg(a.id), '{}') FROM attachments a JOIN users u ON u.id = a.owner_id"
                " WHERE u.alias = $1",
                alias,
            )
            if await conn.fetchval("DELETE FROM users WHERE alias = $1 RETURNING id", alias) is None:
                raise UnknownUser(alias)
            batch.presence.append(f"- {alias}")  # the presence row went with the user
            if uploads:
                # Their uploads go too, but for those attached to messages others keep (theirs now).
                await conn.execute(
                    "DELETE FROM attachments a WHERE a.id = ANY($1::bigint[]) AND NOT EXISTS"
                    " (SELECT 1 FROM messages m WHERE m.attachment_id = a.id)",
                    uploads,
                )

        await self.engine.submit(job)

    async def user(self, alias: str) -> UserRecord | None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> UserRecord | None:
            row = await conn.fetchrow(
                "SELECT u.password_hash, b.alias IS NOT NULL FROM users u"
                " LEFT JOIN blocked_aliases b ON b.alias = u.alias WHERE u.alias = $1",
                alias,
            )
            return None if row is None else UserRecord(alias, row[0], row[1])

        result: UserRecord | None = await self.engine.submit(job)
        return result

    async def set_password(self, alias: str, password_hash: str) -> None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            found = await conn.fetchval(
                "UPDATE users SET password_hash = $1 WHERE alias = $2 RETURNING id", password_hash, alias
            )
            if found is None:
                raise UnknownUser(alias)

        await self.engine.submit(job)

    async def create_session(self, alias: str, token_hash: bytes, now: float, expires_at: float) -> None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            found = await conn.fetchval(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                " SELECT $1, id, $2, $3 FROM users WHERE alias = $4 RETURNING user_id",
                token_hash,
                now,
                expires_at,
                alias,
            )
            if found is None:
                raise UnknownUser(alias)

        await self.engine.submit(job)

    async def session_user(self, token_hash: bytes, now: float) -> tuple[str, float] | None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> tuple[str, float] | None:
            row = await conn.fetchrow(
                "SELECT u.alias, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = $1 AND s.expires_at > $2",
                token_hash,
                now,
            )
            return None if row is None else (str(row[0]), float(row[1]))

        result: tuple[str, float] | None = await self.engine.submit(job)
        return result

    async def revoke_sessions(self, alias: str, token_hash: bytes | None = None) -> None:
        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            if token_hash is None:
                await conn.execute(
                    "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE alias = $1)", alias
                )
            else:
                await conn.execute(
                    "DELETE FROM sessions WHERE token_hash = $1"
                    " AND user_id = (SELECT id FROM users WHERE alias = $2)",
                    token_hash,
                    alias,
                )

        await self.engine.submit(job)

    # -- messages -----------------------------------------------------------------------------------------

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
    ) -> asyncio.Future[tuple[OutboxItem, bool]]:
        # A future, not a coroutine: the session server's hot path waits on it without a task.
        return self.engine.submit_bulk(
            _add_messages,
            (sender, recipient, text, key, attachment, now, max_stored, max_stored_bytes),
            locks=(recipient,),
        )

    def add_messages(
        self, sender: str, sends: Sequence[SendCall], *, now: float, max_stored: int, max_stored_bytes: int
    ) -> asyncio.Future[list[tuple[OutboxItem, bool] | DmdsError]]:
        # One bulk call each: consecutive calls share `_add_messages`'s one statement anyway.
        futures = [
            self.engine.submit_bulk(
                _add_messages,
                (sender, recipient, text, key, 0, now, max_stored, max_stored_bytes),
                locks=(recipient,),
            )
            for recipient, text, key in sends
        ]
        done: asyncio.Future[list[tuple[OutboxItem, bool] | DmdsError]] = (
            asyncio.get_running_loop().create_future()
        )

        def gathered(fut: asyncio.Future[list[Any]]) -> None:
            if done.cancelled():
                return
            results = fut.result()
            failure = next(
                (r for r in results if isinstance(r, BaseException) and not isinstance(r, DmdsError)), None
            )
            if failure is not None:
                done.set_exception(failure)  # the store failed: nothing of it is acknowledged
            else:
                done.set_result(results)

        asyncio.gather(*futures, return_exceptions=True).add_done_callback(gathered)
        return done

    async def pending(
        self, owner: str, after_seq: int, limit: int, *, ahead: bool = False
    ) -> list[OutboxItem]:
        # `ahead` is not used: each batch's reads and writes go to PostgreSQL in order.
        async def job(conn: asyncpg.Connection, batch: Batch) -> list[OutboxItem]:
            rows = await conn.fetch(_PENDING, owner, after_seq, limit)
            return [_item(owner, row) for row in rows]

        result: list[OutboxItem] = await self.engine.submit(job)
        return result

    async def mark_delivered(
        self, owner: str, message_ids: list[int], now: float, offer_to: Callable[[str], bool] | None = None
    ) -> list[OutboxItem]:
        # `offer_to` is not used: the ids come back with the statement that raises the ranges.
        if not message_ids:
            return []

        async def job(conn: asyncpg.Connection, batch: Batch) -> list[OutboxItem]:
            rows = await conn.fetch(
                "SELECT seq, sender, after_seq, covered, keys FROM dmds_deliver_v5($1, $2, $3)",
                owner,
                message_ids,
                now,
            )
            receipts = []
            for seq, sender, after, covered, keys in rows:
                batch.wake(sender)
                ids = tuple(zip(covered, keys, strict=True))
                last, key = ids[-1]
                receipts.append(
                    OutboxItem(seq, sender, DELIVERED, last, owner, "", key, now, after=after, ids=ids)
                )
            return receipts

        # The senders' rows too (their seqs): dmds_lock finds them through the acked ids.
        result: list[OutboxItem] = await self.engine.submit(job, locks=(owner,), acks=(owner, message_ids))
        return result

    async def mark_read(self, owner: str, message_ids: list[int], now: float) -> list[OutboxItem]:
        if not message_ids:
            return []

        async def job(conn: asyncpg.Connection, batch: Batch) -> list[OutboxItem]:
            rows = await conn.fetch(
                "SELECT seq, sender, message_id, recipient, client_key, after_seq"
                " FROM dmds_read_v5($1, $2, $3)",
                owner,
                message_ids,
                now,
            )
            receipts = []
            for seq, sender, message_id, recipient, key, after in sorted(rows, key=lambda r: r[2]):
                batch.wake(sender)
                receipts.append(
                    OutboxItem(seq, sender, READ, message_id, recipient, "", key or "", now, after=after)
                )
            return receipts

        result: list[OutboxItem] = await self.engine.submit(job, locks=(owner,), acks=(owner, message_ids))
        return result

    async def forget(self, receipts: list[OutboxItem]) -> None:
        # A range was pushed up to its last id (the courier may have pushed only its top part, but
        # never above what was below it); an item about one message is its outbox row.
        tops: dict[tuple[str, str], int] = {}
        for item in receipts:
            if item.ids:
                pair = (item.owner, item.peer)
                tops[pair] = max(tops.get(pair, 0), item.ids[-1][0])
        seqs = [item.seq for item in receipts if not item.ids]

        async def job(conn: asyncpg.Connection, batch: Batch) -> None:
            if tops:
                # One entry per pair: an UPDATE ... FROM with two rows for one target applies one.
                await conn.execute(
                    "UPDATE receipts r SET pushed = greatest(r.pushed, x.top)"
                    " FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(owner, peer, top)"
                    " JOIN users o ON o.alias = x.owner JOIN users p ON p.alias = x.peer"
                    " WHERE r.owner_id = o.id AND r.peer_id = p.id",
                    [owner for owner, _ in tops],
                    [peer for _, peer in tops],
                    list(tops.values()),
                )
            if seqs:
                await conn.execute("DELETE FROM outbox WHERE kind <> 1 AND seq = ANY($1::bigint[])", seqs)

        await self.engine.submit(job)

    async def history(
        self, alias: str, peer: str, before: float, limit: int, max_bytes: int = 1 << 20
    ) -> list[StoredMessage]:
        async def job(conn: asyncpg.Connection, batch: Batch) -> list[StoredMessage]:
            until = before if before > 0 else float("inf")
            me = await conn.fetchval("SELECT id FROM users WHERE alias = $1", alias)
            if me is None:
                return []
            pair = f"{alias} {peer}" if alias < peer else f"{peer} {alias}"
            page: list[StoredMessage] = []
            size = 0
            # A cursor: never hold much more than a frame of rows, whatever `limit` says.
            async for row in conn.cursor(
                "SELECT m.sender_alias, m.recipient_alias, m.message_id, m.text, m.sent_at, m.delivered_at,"
                " m.read_at, a.id, a.name, a.media_type, a.size FROM messages m"
                " LEFT JOIN attachments a ON a.id = m.attachment_id AND a.complete"
                " WHERE m.pair = $1 AND m.sent_at < $2"
                # Only this user's own messages: a re-registered alias must not read what the
                # deleted user of the same name sent.
                " AND (m.recipient_id = $3 OR m.sender_id = $3)"
                " ORDER BY m.sent_at DESC, m.id DESC LIMIT $4",
                pair,
                until,
                me,
                limit,
                prefetch=min(limit, 100) or 1,
            ):
                s, r, mid, text, sent, dlv, rd, att, *info = row
                attachment = None if att is None else AttachmentInfo(att, *info)
                page.append(StoredMessage(s, r, mid, text, sent, dlv, rd, attachment))
                size += len(text)
                if size > max_bytes:
                    break
            return page

        result: list[StoredMessage] = await self.engine.submit(job)
        return result

    async def purge(self, delivered_before: float) -> int:
        async def job(conn: asyncpg.Connection, batch: Batch) -> int:
            status = await conn.execute(
                "DELETE FROM messages m WHERE m.delivered_at IS NOT NULL AND m.delivered_at < $1"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.ref = m.id)"
                # Nor one a receipt range still has to push (its keys and ids are read from it).
                " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.owner_id = m.sender_id"
                "  AND r.peer_id = m.recipient_id AND m.message_id > r.pushed)",
                delivered_before,
            )
            await conn.execute(
                "DELETE FROM attachments a WHERE a.created_at < $1 AND (NOT a.complete OR NOT EXISTS"
                " (SELECT 1 FROM messages m WHERE m.attachment_id = a.id))",
                delivered_before,
            )
            return int(status.split()[-1])

        result: int = await self.engine.submit(job)
        return result

    # -- attachments (attachments.py) ----------------------------------------------------------------

    async def start_upload(self, owner: str, name: str, media_type: str, size: int, now: float) -> int:
        result: int = await self.engine.submit(
            lambda conn, _batch: attachments.start_upload(
                conn, owner, name=name, media_type=media_type, size=size, now=now
            )
        )
        return result

    async def append_upload(self, owner: str, upload: int, offset: int, data: bytes) -> int:
        result: int = await self.engine.submit(
            lambda conn, _batch: attachments.append_upload(conn, owner, upload, offset, data)
        )
        return result

    async def attachment(self, attachment_id: int) -> AttachmentInfo | None:
        result: AttachmentInfo | None = await self.engine.submit(
            lambda conn, _batch: attachments.attachment(conn, attachment_id)
        )
        return result

    async def read_attachment(self, reader: str, attachment_id: int, offset: int, length: int) -> bytes:
        result: bytes = await self.engine.submit(
            lambda conn, _batch: attachments.read_attachment(conn, reader, attachment_id, offset, length)
        )
        return result


async def _add_messages(conn: asyncpg.Connection, batch: Batch, calls: list[Any]) -> list[Any]:
    """The bulk job of `add_message`: every consecutive call of the batch in one statement."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    for call in calls:
        for column, value in zip(columns, call, strict=True):
            column.append(value)
    rows = await conn.fetch("SELECT * FROM dmds_add_messages_v5($1, $2, $3, $4, $5, $6, $7, $8)", *columns)
    out: list[Any] = [None] * len(calls)
    for i, status, seq, message_id, sent_at, recipient, att_name, att_type, att_size, after in rows:
        sender, wanted, text, key, attachment, _now, max_stored, max_bytes = calls[i - 1]
        result: Any
        if status == 0:
            batch.wake(recipient)
            info = None if att_name is None else AttachmentInfo(attachment, att_name, att_type, att_size)
            item = OutboxItem(
                seq, recipient, MESSAGE, message_id, sender, text, key or "", sent_at, info, after
            )
            result = (item, True)
        elif status == 1:
            result = (OutboxItem(0, recipient, MESSAGE, message_id, sender, text, key, sent_at), False)
        elif status == 2:
            result = UnknownUser(sender)
        elif status == 3:
            result = UnknownUser(wanted)
        elif status == 4:
            waiting = f"{max_stored} undelivered messages or {max_bytes} bytes"
            result = LimitExceeded(f"{wanted} has {waiting} waiting")
        else:
            result = UnknownAttachment(f"attachment {attachment}")
        out[i - 1] = result
    assert all(isinstance(o, tuple | DmdsError) for o in out)
    return out
