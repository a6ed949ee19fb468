-- dmds SQLite schema 1: users and the outbox of the classic protocol.
CREATE TABLE IF NOT EXISTS users (
    id              INTEGER PRIMARY KEY,
    alias           TEXT NOT NULL UNIQUE,
    full_name       TEXT NOT NULL,
    birth_date      TEXT NOT NULL,
    registered_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- classic.md: the n-th message ever accepted for a recipient has id n.
    last_message_id INTEGER NOT NULL DEFAULT 0,
    stored_messages INTEGER NOT NULL DEFAULT 0
);

-- Everything waiting to be pushed to a user: messages to them and receipts for messages they sent.
-- AUTOINCREMENT: seq is never reused, so a courier's cursor stays valid across deletions.
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         INTEGER NOT NULL,
    message_id   INTEGER NOT NULL,
    sender_alias TEXT NOT NULL DEFAULT '',
    sender_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    text         TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox(owner_id, seq);
CREATE INDEX IF NOT EXISTS outbox_sender ON outbox(sender_id);
