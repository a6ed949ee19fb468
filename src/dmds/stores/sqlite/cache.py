"""What the SQLite store keeps in memory: the message path's counters, and the rows it holds back.

This process alone writes the database (exclusive locking mode), so copies of the rows it changes
stay exact as long as every change goes through them: users' message counters, the seq counter,
the blocked aliases. The message path's jobs append their rows here and `GroupCommit` writes them
with one executemany per table (`Deferred`). After a batch is rolled back, the caches are read again.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Users whose message counters are kept in memory; past it the cache starts again empty.
MAX_CACHED_ACCOUNTS = 100_000
#: The highest seq in the store: messages' ids and the receipts' seqs share one counter.
TOP_SEQ = (
    "max(coalesce((SELECT max(id) FROM messages), 0), coalesce((SELECT max(seq) FROM outbox), 0),"
    " coalesce((SELECT max(seq) FROM receipts), 0))"
)


@dataclass(slots=True)
class Account:
    """A user's row as the message path needs it."""

    id: int
    last_message_id: int
    stored_messages: int
    stored_bytes: int
    #: every message to this user up to this id is delivered (schema 8)
    delivered_upto: int


class Writes:
    """The rows the message path's jobs of one batch write, inserted with one executemany per table
    before the batch's COMMIT (or before any other job runs, so that reads see them).

    A statement costs the store several microseconds of Python and C glue; a row of an executemany
    a fraction of that. Message and outbox ids are allocated from the seq counter (explicit keys), so
    that no job needs the row's `lastrowid` back."""

    __slots__ = ("dirty", "keys", "marks", "messages", "outbox")

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.dirty: dict[int, Account] = {}
        #: rises of users' delivered marks: (recipient_id, upto, at)
        self.marks: list[tuple[int, int, float]] = []
        # keys used in this batch and not yet inserted: (sender_id, key) -> (recipient, id, sent_at)
        self.keys: dict[tuple[int, str], tuple[str, int, float]] = {}

    def __bool__(self) -> bool:
        return bool(self.messages or self.outbox or self.dirty or self.marks)


class StoreCache:
    """The counters, the blocked aliases and the held-back rows of one store (a `Deferred`)."""

    __slots__ = ("accounts", "blocked", "careful", "next_seq", "writes")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.accounts: dict[str, Account] = {}
        self.writes = Writes()
        #: look a send's key up before storing it (a `Deferred` rerun); else the unique index on
        #: (sender_id, client_key) catches a resend
        self.careful = False
        # Loaded once, before anything runs: afterwards it only goes up, even past deleted rows and
        # rolled-back batches, so no seq a courier has passed is handed out again (read later, after
        # receipts were deleted, max(seq) would hand out a pushed seq anew). A message's seq is its
        # row id; receipts count on from the same counter (schemas 4 and 5).
        self.next_seq: int = conn.execute(f"SELECT {TOP_SEQ}").fetchone()[0] + 1
        #: the blocked aliases (schema 6), so that REGISTER checks them without a statement
        self.blocked: set[str] = set()
        self._load_blocked(conn)

    def seq(self) -> int:
        """The next seq (a message's row id, or a receipt's place in its owner's order)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def account(self, conn: sqlite3.Connection, alias: str) -> Account | None:
        account = self.accounts.get(alias)
        if account is None:
            row = conn.execute(
                "SELECT id, last_message_id, stored_messages, stored_bytes, delivered_upto FROM users"
                " WHERE alias = ?",
                (alias,),
            ).fetchone()
            if row is None:
                return None
            if len(self.accounts) >= MAX_CACHED_ACCOUNTS:
                # Rare; everything is reloaded on demand, so the counters of this batch so far
                # must be in the database first.
                self.write(conn)
                self.accounts.clear()
            account = self.accounts[alias] = Account(*row)
        return account

    def free(self, me: Account, count: int, size: int) -> None:
        """`count` messages of `size` bytes left what `me` has waiting."""
        me.stored_messages -= count
        me.stored_bytes -= size
        self.writes.dirty[me.id] = me

    # -- Deferred ----------------------------------------------------------------------------------------

    def has_writes(self) -> bool:
        return bool(self.writes)

    def write(self, conn: sqlite3.Connection) -> None:
        writes, self.writes = self.writes, Writes()
        if writes.messages:
            conn.executemany(
                "INSERT INTO messages (id, recipient_id, recipient_alias, message_id, sender_id,"
                " sender_alias, client_key, pair, text, attachment_id, size, sent_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                writes.messages,
            )
        if writes.outbox:
            conn.executemany(
                "INSERT INTO outbox (seq, owner_id, kind, message_id, sender_alias, sender_id, ref)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                writes.outbox,
            )
        if writes.dirty:
            conn.executemany(
                "UPDATE users SET last_message_id = ?, stored_messages = ?, stored_bytes = ?,"
                " delivered_upto = ? WHERE id = ?",
                [
                    (a.last_message_id, a.stored_messages, a.stored_bytes, a.delivered_upto, a.id)
                    for a in writes.dirty.values()
                ],
            )
        if writes.marks:
            conn.executemany("INSERT INTO deliveries (recipient_id, upto, at) VALUES (?, ?, ?)", writes.marks)

    def rolled_back(self, conn: sqlite3.Connection) -> None:
        # The seq counter stays: the seqs it gave the rolled-back rows are simply never used.
        self.accounts.clear()
        self.writes = Writes()
        try:
            self._load_blocked(conn)
        except sqlite3.Error:
            log.exception("could not read the blocked aliases again after a failed batch")

    def _load_blocked(self, conn: sqlite3.Connection) -> None:
        self.blocked = {alias for (alias,) in conn.execute("SELECT alias FROM blocked_aliases")}
