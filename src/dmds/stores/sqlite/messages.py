"""The SQLite store's message path: the jobs that store, page, settle and receipt messages.

Each function is a job's body: it runs inside a batch of `GroupCommit` on the store's connection,
with the store's `StoreCache`, and keeps the batch rule (every domain error before the first write).

Schema 4 keeps one row per message. Schema 5 keeps delivery receipts as ranges, one `receipts` row
per (sender, recipient); read receipts, which come in any order, are outbox rows. Schema 8 keeps what
a recipient has received as a mark, `users.delivered_upto`: every message to them up to it is
delivered; above it, those with a delivered_at (delivered out of order). What waits is read from the
unique (recipient_id, message_id) index above the mark, in id order, which is also seq order: both
count up together in `add`, and this process alone writes the store.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from dmds.core.model import AttachmentInfo, ItemKind, OutboxItem, SendCall, StoredMessage
from dmds.errors import DmdsError, LimitExceeded, UnknownAttachment, UnknownUser
from dmds.stores.sqlite.cache import Account, StoreCache

#: Ids per statement in `IN (...)` lists (SQLite allows 32766 parameters).
MAX_IDS = 500


#: A key's first message: (recipient, message id, sent at).
KeyUse = tuple[str, int, float]
#: `add`'s request: (sender, recipient, text, now, max_stored, max_stored_bytes, key, attachment)
AddCall = tuple[str, str, str, float, int, int, str | None, int]


def add(conn: sqlite3.Connection, cache: StoreCache, call: AddCall) -> tuple[OutboxItem, bool]:
    """Store a message (its row held back in `cache.writes`); (the item, True), or for a key
    already used (a resend) the first message's item and False. The key is looked up in the
    store only when `cache.careful`: else a resend's row breaks the unique index and the batch
    runs again, careful (`Deferred`). `add_many` takes the same steps for a run of sends, inline
    (a call per message for shared steps cost it half its gain)."""
    sender, recipient, text, now, max_stored, max_stored_bytes, key, attachment = call
    # Every check comes before the first change to the caches or to `writes`: a refused
    # message leaves nothing behind (see the batches' theory of operation).
    me = cache.account(conn, sender)
    if me is None:
        raise UnknownUser(sender)
    writes = cache.writes
    if key is not None:
        # A resend: answer the first message's id and store nothing (the unique index
        # on (sender_id, client_key) makes this one lookup).
        done = writes.keys.get((me.id, key))
        if done is None and cache.careful:
            done = _used_keys(conn, me.id, [key]).get(key)
        if done is not None:
            return OutboxItem(0, done[0], ItemKind.MESSAGE, done[1], sender, text, key, done[2]), False
    size = len(text.encode())
    info = None
    if attachment:
        cache.write(conn)  # attachments are rare: keep the simple path
        found = conn.execute(
            "SELECT size FROM attachments WHERE id = ? AND owner_id = ? AND complete = 1",
            (attachment, me.id),
        ).fetchone()
        if found is None:
            raise UnknownAttachment(f"attachment {attachment}")
        size += found[0]
        info = attachment_info(conn, attachment)
    to = cache.account(conn, recipient)
    # Fetched anew: the attachment's path and `account` may have written the earlier rows.
    writes = cache.writes
    if to is None:
        raise UnknownUser(recipient)
    if to.stored_messages >= max_stored or to.stored_bytes + size > max_stored_bytes:
        raise _full(recipient, max_stored, max_stored_bytes)
    # The message's row id is its seq: no outbox row (schema 4).
    seq = cache.next_seq
    cache.next_seq = seq + 1
    to.last_message_id += 1
    to.stored_messages += 1
    to.stored_bytes += size
    writes.dirty[to.id] = to
    message_id = to.last_message_id
    writes.messages.append(
        (
            seq, to.id, recipient, message_id, me.id, sender, key,
            pair(sender, recipient), text, attachment or None, size, now,
        )
    )  # fmt: skip
    if key is not None:
        writes.keys[(me.id, key)] = (recipient, message_id, now)
    return OutboxItem(seq, recipient, ItemKind.MESSAGE, message_id, sender, text, key or "", now, info), True


def add_many(
    conn: sqlite3.Connection,
    cache: StoreCache,
    sender: str,
    sends: Sequence[SendCall],
    *,
    now: float,
    max_stored: int,
    max_stored_bytes: int,
) -> list[tuple[OutboxItem, bool] | DmdsError]:
    """`add` for each of `sends` (no attachments) in one job; a refused one is its error (each is
    checked before it writes, so the others are unharmed). The same steps as `add`, with what a
    run shares (the sender, a recipient of consecutive sends, their conversation's key) found
    once: this loop is most of a message's Python in the store."""
    me = cache.account(conn, sender)
    if me is None:
        return [UnknownUser(sender) for _ in sends]
    my_id = me.id
    used: dict[str, KeyUse] = {}
    if cache.careful:
        used = _used_keys(conn, my_id, [key for _, _, key in sends if key is not None])
    message = ItemKind.MESSAGE
    out: list[tuple[OutboxItem, bool] | DmdsError] = []
    to: Account | None = None
    current = conversation = ""
    for recipient, text, key in sends:
        if key is not None:
            # A resend (of a send in the store, in this batch, or earlier in this run): the first
            # message's item, nothing stored.
            done = cache.writes.keys.get((my_id, key)) or used.get(key)
            if done is not None:
                out.append((OutboxItem(0, done[0], message, done[1], sender, text, key, done[2]), False))
                continue
        if to is None or recipient != current:
            # `account` may write what is held back (its cache full): `writes` is read after it.
            to = cache.account(conn, recipient)
            if to is None:
                out.append(UnknownUser(recipient))
                continue
            current, conversation = recipient, pair(sender, recipient)
        size = len(text.encode())
        if to.stored_messages >= max_stored or to.stored_bytes + size > max_stored_bytes:
            out.append(_full(recipient, max_stored, max_stored_bytes))
            continue
        writes = cache.writes
        seq = cache.next_seq
        cache.next_seq = seq + 1
        message_id = to.last_message_id = to.last_message_id + 1
        to.stored_messages += 1
        to.stored_bytes += size
        writes.dirty[to.id] = to
        writes.messages.append(
            (seq, to.id, recipient, message_id, my_id, sender, key, conversation, text, None, size, now)
        )
        if key is not None:
            writes.keys[(my_id, key)] = used[key] = (recipient, message_id, now)
        out.append((OutboxItem(seq, recipient, message, message_id, sender, text, key or "", now), True))
    return out


def _full(recipient: str, max_stored: int, max_stored_bytes: int) -> LimitExceeded:
    waiting = f"{max_stored} undelivered messages or {max_stored_bytes} bytes"
    return LimitExceeded(f"{recipient} has {waiting} waiting")


def _used_keys(conn: sqlite3.Connection, sender_id: int, keys: list[str]) -> dict[str, KeyUse]:
    """Which of `keys` the sender used already: one statement per MAX_IDS keys, not one each."""
    used: dict[str, KeyUse] = {}
    for i in range(0, len(keys), MAX_IDS):
        chunk = keys[i : i + MAX_IDS]
        sql = (
            "SELECT client_key, recipient_alias, message_id, sent_at FROM messages"
            f" WHERE sender_id = ? AND client_key IN ({','.join('?' * len(chunk))})"
        )
        for key, recipient, message_id, sent_at in conn.execute(sql, (sender_id, *chunk)):
            used[key] = (recipient, message_id, sent_at)
    return used


def pending(
    conn: sqlite3.Connection, cache: StoreCache, owner: str, after_seq: int, limit: int
) -> list[OutboxItem]:
    """What waits for `owner` after `after_seq`, in seq order: messages, read receipts, ranges."""
    me = cache.account(conn, owner)
    if me is None:
        return []
    start = me.delivered_upto
    if after_seq:
        # A courier's cursor is most often a message of theirs: every message to them up to its
        # id is at or below the cursor, so the scan starts there, not at the mark (which a
        # message left unacked can hold below any number of messages delivered out of order).
        row = conn.execute(_MESSAGE_AT, (after_seq, me.id)).fetchone()
        if row is not None and row[0] > start:
            start = row[0]
    message = ItemKind.MESSAGE
    items = [
        OutboxItem(
            seq, owner, message, message_id, sender, text, key or "", sent_at,
            None if att is None else attachment_info(conn, att),
        )
        for seq, message_id, sender, text, key, sent_at, att in conn.execute(
            _WAITING_MESSAGES, (me.id, start, after_seq, limit)
        )
    ]  # fmt: skip
    others = [_item(owner, row) for row in conn.execute(_WAITING_OUTBOX, (me.id, after_seq, limit))]
    ranges = _waiting_ranges(conn, me, owner, after_seq, limit)
    if not others and not ranges:
        return items
    merged = heapq.merge(items, others, ranges, key=lambda i: i.seq)
    return list(itertools.islice(merged, limit))


def settling(
    conn: sqlite3.Connection, cache: StoreCache, owner: str, message_ids: list[int]
) -> Account | None:
    """The account whose messages are being settled, with the batch's new messages written
    (a receipt range must see what is undelivered); None if there is nothing to do."""
    me = cache.account(conn, owner)
    if me is None or not message_ids:
        return None
    if cache.writes:
        cache.write(conn)
    return me


def read(
    conn: sqlite3.Connection, cache: StoreCache, me: Account, message_ids: list[int], now: float
) -> list[OutboxItem]:
    """Mark messages read (and delivered, if they were not), and queue a READ receipt for each
    sender: two UPDATE ... RETURNING per `MAX_IDS` ids rather than statements per message; the
    receipts join the batch's deferred outbox rows."""
    receipt = ItemKind.READ
    settled: list[tuple[Any, ...]] = []
    freed: list[int] = []  # sizes of the messages leaving the undelivered set
    for start in range(0, len(message_ids), MAX_IDS):
        chunk = message_ids[start : start + MAX_IDS]
        marks = ",".join("?" * len(chunk))
        where = f"WHERE recipient_id = ? AND message_id IN ({marks})"
        # Read implies delivered: above the mark, out of order (it rises over them with the acks).
        delivered = conn.execute(
            f"UPDATE messages SET delivered_at = ? {where} AND message_id > ? AND delivered_at IS NULL"
            f" {_SETTLED}",
            (now, me.id, *chunk, me.delivered_upto),
        ).fetchall()
        freed.extend(row[6] for row in delivered)
        settled.extend(
            conn.execute(
                f"UPDATE messages SET read_at = ? {where} AND read_at IS NULL {_SETTLED}",
                (now, me.id, *chunk),
            ).fetchall()
        )
    if freed:
        cache.free(me, len(freed), sum(freed))
    receipts = []
    outbox = cache.writes.outbox
    for ref, message_id, sender_id, sender, recipient, key, _size in sorted(settled, key=lambda r: r[1]):
        if sender_id is None:
            continue  # the sender unregistered: nobody to tell
        seq = cache.seq()
        outbox.append((seq, sender_id, receipt, message_id, "", None, ref))
        receipts.append(OutboxItem(seq, sender, receipt, message_id, recipient, "", key or "", now))
    return receipts


def delivered(
    conn: sqlite3.Connection,
    cache: StoreCache,
    me: Account,
    owner: str,
    message_ids: list[int],
    *,
    now: float,
    offer_to: Callable[[str], bool] | None,
) -> list[OutboxItem]:
    """Mark messages of `owner` delivered, then raise their senders' receipt ranges.

    Acks come in order, so the ids are mostly one run just above the recipient's mark: the run
    raises the mark (schema 8), which writes no message row; what it frees is summed per sender
    by SQLite over a range of the unique (recipient_id, message_id) index, rather than a row
    returned per message. A run above a message not yet acked sets its rows' delivered_at, until
    the mark rises past them."""
    ids = sorted(set(message_ids))
    runs: list[tuple[int, int]] = []
    for message_id in ids:
        if runs and runs[-1][1] == message_id - 1:
            runs[-1] = (runs[-1][0], message_id)
        else:
            runs.append((message_id, message_id))
    # The runs that reach the mark raise it (never past the last message: an ack of an id not
    # yet given must not mark the message that will get it). The rest came out of order.
    upto, head = me.delivered_upto, 0
    while head < len(runs) and runs[head][0] <= upto + 1:
        upto = max(upto, min(runs[head][1], me.last_message_id))
        head += 1
    # (condition, its bounds, whether the rows get their own delivered_at)
    wheres: list[tuple[str, tuple[int, ...], bool]] = []
    if upto > me.delivered_upto:
        wheres.append(("message_id BETWEEN ? AND ?", (me.delivered_upto + 1, upto), False))
    rest = [i for i in ids if i > upto]
    if len(runs[head:]) * 8 <= len(rest):
        wheres += [("message_id BETWEEN ? AND ?", run, True) for run in runs[head:]]
    else:  # scattered: IN lists
        wheres += [
            (f"message_id IN ({','.join('?' * len(chunk))})", tuple(chunk), True)
            for chunk in (rest[i : i + MAX_IDS] for i in range(0, len(rest), MAX_IDS))
        ]
    senders: dict[int, tuple[str, int]] = {}  # sender id -> (alias, lowest message id marked)
    count = size = 0
    for where, bounds, own in wheres:
        cond = f"recipient_id = ? AND {where} AND delivered_at IS NULL"
        args = (me.id, *bounds)
        n, known, total, first, last, low, alias = conn.execute(_SETTLING_ONE.format(cond), args).fetchone()
        if not n:
            continue  # unknown, or already marked: a repeated Ack changes nothing
        rows: Any
        if known == n and first == last:
            rows = ((first, alias, n, total, low),)  # the usual case: one sender
        elif not known:
            rows = ((None, alias, n, total, low),)  # every sender unregistered
        else:  # several senders: per sender, which costs a temporary B-tree
            rows = conn.execute(_SETTLING.format(cond), args)
        count += n
        size += total
        for sender_id, sender, _n, _total, lowest in rows:
            if sender_id is not None:  # else the sender unregistered: nobody to tell
                before = senders.get(sender_id)
                senders[sender_id] = (sender, lowest if before is None else min(lowest, before[1]))
        if own:
            conn.execute(f"UPDATE messages SET delivered_at = ? WHERE {cond}", (now, *args))
    if upto > me.delivered_upto:
        # Up to the first message still undelivered: past those delivered out of order before.
        gap = conn.execute(_UNDELIVERED_ABOVE, (me.id, upto)).fetchone()
        me.delivered_upto = gap[0] - 1 if gap is not None else me.last_message_id
        cache.writes.marks.append((me.id, me.delivered_upto, now))
        cache.writes.dirty[me.id] = me
    if count:
        cache.free(me, count, size)
    return _receipt_ranges(conn, cache, me, owner, senders, offer_to=offer_to)


def _receipt_ranges(
    conn: sqlite3.Connection,
    cache: StoreCache,
    me: Account,
    owner: str,
    senders: dict[int, tuple[str, int]],
    *,
    offer_to: Callable[[str], bool] | None,
) -> list[OutboxItem]:
    """Raise each sender's receipt range (schema 5) over what `owner` has now received from
    them: up to the first of their messages still undelivered, or the top of the mailbox. One
    item per sender, with every message the range newly covers (most often: those just acked).
    `senders`: (alias, lowest message id just delivered) by sender id. A sender for whom
    `offer_to` says False gets no item: nobody would be offered it, and reading the ids and keys
    of its range (a row per message) is most of the cost; the courier of their next connection
    reads the range whole."""
    receipts = []
    for sender_id, (sender, low) in senders.items():
        row = conn.execute(
            "SELECT upto FROM receipts WHERE owner_id = ? AND peer_id = ?", (sender_id, me.id)
        ).fetchone()
        # The sender's messages up to its range are all delivered: the search for the first one
        # still undelivered starts above it, not at the mark, which a message of someone else's
        # left unacked can hold low below any number of messages delivered out of order.
        start = max(me.delivered_upto, row[0]) if row is not None else me.delivered_upto
        gap = conn.execute(_FIRST_UNDELIVERED, (me.id, start, sender_id)).fetchone()
        top = gap[0] - 1 if gap is not None else me.last_message_id
        # A first range starts below the lowest message acked now: earlier ones were receipted
        # one by one by an earlier schema, or are below the gap and wait for it to close.
        upto = row[0] if row is not None else min(low, top + 1) - 1
        if top <= upto:
            continue  # acked above a gap: receipted when it closes
        seq = cache.seq()
        conn.execute(
            "INSERT INTO receipts (owner_id, peer_id, upto, pushed, seq) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (owner_id, peer_id) DO UPDATE SET upto = excluded.upto, seq = excluded.seq",
            (sender_id, me.id, top, upto, seq),
        )
        if offer_to is not None and not offer_to(sender):
            continue
        ids = tuple(conn.execute(_COVERED, (me.id, upto, top, sender_id)).fetchall())
        if ids:
            last, key = ids[-1]
            receipts.append(OutboxItem(seq, sender, ItemKind.DELIVERED, last, owner, "", key, ids=ids))
    return receipts


def _waiting_ranges(
    conn: sqlite3.Connection, me: Account, owner: str, after_seq: int, limit: int
) -> list[OutboxItem]:
    """The receipt ranges of `owner` not yet pushed, after `after_seq`, each with its messages."""
    items = []
    for seq, upto, pushed, peer_id, peer in conn.execute(_WAITING_RANGES, (me.id, after_seq, limit)):
        ids = tuple(conn.execute(_COVERED, (peer_id, pushed, upto, me.id)).fetchall())
        if ids:
            last, key = ids[-1]
            items.append(OutboxItem(seq, owner, ItemKind.DELIVERED, last, peer, "", key, ids=ids))
    return items


def forget(conn: sqlite3.Connection, cache: StoreCache, receipts: list[OutboxItem]) -> None:
    """Receipts pushed: ranges raise their `pushed` mark, outbox rows go."""
    ranges = []
    for item in receipts:
        if item.ids:
            told, peer = cache.account(conn, item.owner), cache.account(conn, item.peer)
            if told is not None and peer is not None:
                ranges.append((item.ids[-1][0], told.id, peer.id))
    if ranges:
        conn.executemany(
            "UPDATE receipts SET pushed = max(pushed, ?) WHERE owner_id = ? AND peer_id = ?", ranges
        )
    seqs = [item.seq for item in receipts if not item.ids]
    for start in range(0, len(seqs), MAX_IDS):
        chunk = seqs[start : start + MAX_IDS]
        conn.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk)


def history(
    conn: sqlite3.Connection, alias: str, peer: str, *, before: float, limit: int, max_bytes: int
) -> list[StoredMessage]:
    """A page of the conversation of `alias` with `peer`, newest first, sent before `before`."""
    until = before if before > 0 else float("inf")
    me = conn.execute("SELECT id FROM users WHERE alias = ?", (alias,)).fetchone()
    if me is None:
        return []
    cursor = conn.execute(
        f"SELECT sender_alias, recipient_alias, message_id, text, sent_at, {DELIVERED_AT}, read_at,"
        " attachment_id FROM messages WHERE pair = ? AND sent_at < ?"
        # Only this user's own messages: a re-registered alias must not read what the
        # deleted user of the same name sent (what they received went with their account).
        " AND (recipient_id = ? OR sender_id = ?)"
        " ORDER BY sent_at DESC, id DESC LIMIT ?",
        (pair(alias, peer), until, me[0], me[0], limit),
    )
    page: list[StoredMessage] = []
    size = 0
    for s, r, mid, text, sent, dlv, rd, att in cursor:
        info = attachment_info(conn, att) if att else None
        page.append(StoredMessage(s, r, mid, text, sent, dlv, rd, info))
        size += len(text)
        if size > max_bytes:
            # Never hold much more than a frame of rows. The row that passed the budget is
            # kept, so the caller sees the page is over its frame and says there is more.
            break
    cursor.close()
    return page


def purge(conn: sqlite3.Connection, delivered_before: float) -> int:
    """Delete messages delivered before the time whose receipts are all pushed; their number."""
    cur = conn.execute(
        f"DELETE FROM messages WHERE {DELIVERED_AT} < ?"
        " AND id NOT IN (SELECT ref FROM outbox WHERE ref IS NOT NULL)"
        " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.owner_id = messages.sender_id"
        "  AND r.peer_id = messages.recipient_id AND messages.message_id > r.pushed)",
        (delivered_before,),
    )
    # A rise of a mark tells the time of the messages above the one before it: once none of
    # them is left, it tells nothing (each user's lowest message keeps the rise it needs).
    conn.execute(
        "DELETE FROM deliveries WHERE upto < coalesce((SELECT min(m.message_id) FROM messages m"
        " WHERE m.recipient_id = deliveries.recipient_id), upto + 1)"
    )
    conn.execute(
        "DELETE FROM attachments WHERE created_at < ? AND (complete = 0 OR id NOT IN"
        " (SELECT attachment_id FROM messages WHERE attachment_id IS NOT NULL))",
        (delivered_before,),
    )
    return cur.rowcount


def attachment_info(conn: sqlite3.Connection, attachment_id: int) -> AttachmentInfo | None:
    row = conn.execute(
        "SELECT name, media_type, size FROM attachments WHERE id = ? AND complete = 1", (attachment_id,)
    ).fetchone()
    return None if row is None else AttachmentInfo(attachment_id, *row)


def pair(a: str, b: str) -> str:
    """The conversation's key: the two aliases in order, NUL between."""
    return f"{a}\0{b}" if a < b else f"{b}\0{a}"


#: When a message of the `messages` table was delivered, or NULL (schema 8): its own delivered_at,
#: else the time of the first rise of its recipient's mark to or past it.
DELIVERED_AT = (
    "coalesce(delivered_at, (SELECT d.at FROM deliveries d WHERE d.recipient_id = messages.recipient_id"
    " AND d.upto >= messages.message_id ORDER BY d.upto LIMIT 1))"
)
# A recipient's first message from a sender that is still undelivered: (recipient, from, sender).
_FIRST_UNDELIVERED = (
    "SELECT message_id FROM messages WHERE recipient_id = ? AND message_id > ? AND delivered_at IS NULL"
    " AND sender_id = ? ORDER BY message_id LIMIT 1"
)
# The id of the recipient's message with a seq (its row id), if it is one: (seq, recipient).
_MESSAGE_AT = "SELECT message_id FROM messages WHERE id = ? AND recipient_id = ?"
# A recipient's first message still undelivered above a mark (the mark rises to just below it).
_UNDELIVERED_ABOVE = (
    "SELECT message_id FROM messages WHERE recipient_id = ? AND message_id > ? AND delivered_at IS NULL"
    " ORDER BY message_id LIMIT 1"
)
# The messages of a receipt range: (recipient, after, up to, sender) -> (message_id, key) in order.
# Every one is delivered: a range never rises past its sender's first undelivered message.
_COVERED = (
    "SELECT message_id, coalesce(client_key, '') FROM messages WHERE recipient_id = ? AND message_id > ?"
    " AND message_id <= ? AND sender_id = ? ORDER BY message_id"
)
_WAITING_RANGES = (
    "SELECT r.seq, r.upto, r.pushed, r.peer_id, u.alias FROM receipts r JOIN users u ON u.id = r.peer_id"
    " WHERE r.owner_id = ? AND r.upto > r.pushed AND r.seq > ? ORDER BY r.seq LIMIT ?"
)
_SETTLED = "RETURNING id, message_id, sender_id, sender_alias, recipient_alias, client_key, size"
# What a delivery frees, and whether it is all one sender's (the condition is formatted in): without
# GROUP BY no temporary B-tree, 0.50 against 0.76 us per message acked.
_SETTLING_ONE = (
    "SELECT count(*), count(sender_id), sum(size), min(sender_id), max(sender_id), min(message_id),"
    " min(sender_alias) FROM messages WHERE {}"
)
# What a delivery frees, per sender (the condition is formatted in).
_SETTLING = (
    "SELECT sender_id, min(sender_alias), count(*), sum(size), min(message_id) FROM messages"
    " WHERE {} GROUP BY sender_id"
)
# What waits for an owner: the undelivered messages to them (above their mark, in id order, which
# is seq order, no sort: (recipient, from id, after seq, limit)), and the read receipts for messages
# they sent (outbox rows pointing at their message through `ref`), merged in Python with the
# receipt ranges. A UNION ALL with ORDER BY sorted the page in a temporary B-tree: 2.7 against 1.1
# us per row.
_WAITING_MESSAGES = (
    "SELECT id, message_id, sender_alias, text, client_key, sent_at, attachment_id FROM messages"
    " WHERE recipient_id = ? AND message_id > ? AND delivered_at IS NULL AND id > ? ORDER BY message_id"
    " LIMIT ?"
)
_WAITING_OUTBOX = (
    "SELECT o.seq, o.kind, o.message_id, o.sender_alias, m.recipient_alias, m.text, m.client_key,"
    " m.sent_at, o.text, a.id, a.name, a.media_type, a.size FROM outbox o"
    " LEFT JOIN messages m ON m.id = o.ref LEFT JOIN attachments a ON a.id = m.attachment_id"
    " WHERE o.owner_id = ? AND o.seq > ? ORDER BY o.seq LIMIT ?"
)
# A dict lookup rather than the enum's call: a courier's page is up to a thousand rows.
_KINDS = {kind.value: kind for kind in ItemKind}


def _item(owner: str, row: tuple[Any, ...]) -> OutboxItem:
    seq, kind_value, message_id, sender, recipient, text, key, sent_at, legacy_text, att, *info = row
    kind = _KINDS[kind_value]
    return OutboxItem(
        seq,
        owner,
        kind,
        message_id,
        sender if kind is ItemKind.MESSAGE else (recipient or ""),
        text if text is not None else legacy_text,
        key or "",
        sent_at or 0.0,
        None if att is None else AttachmentInfo(att, *info),
    )
