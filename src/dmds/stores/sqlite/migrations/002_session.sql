-- dmds SQLite schema 2: accounts with passwords, session tokens, kept messages (history,
-- idempotent sends, read state) and attachments.

ALTER TABLE users ADD COLUMN password_hash TEXT;
-- Bytes of the undelivered messages waiting for the user (text and attachments), for its limit.
ALTER TABLE users ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;

-- Every accepted message, kept after delivery for the retention period (history, read receipts).
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    recipient_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    recipient_alias TEXT NOT NULL,
    message_id      INTEGER NOT NULL,
    sender_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    sender_alias    TEXT NOT NULL,
    client_key      TEXT,
    -- the two aliases in order, NUL between: one index serves a conversation in both directions
    pair            TEXT NOT NULL,
    text            TEXT NOT NULL,
    attachment_id   INTEGER REFERENCES attachments(id),
    -- what the message counts against its recipient's stored_bytes until delivered
    size            INTEGER NOT NULL DEFAULT 0,
    sent_at         REAL NOT NULL,
    delivered_at    REAL,
    read_at         REAL,
    UNIQUE (recipient_id, message_id)
);
-- A resend with the same key returns the same message: one key per sender.
CREATE UNIQUE INDEX messages_key ON messages(sender_id, client_key) WHERE client_key IS NOT NULL;
CREATE INDEX messages_sender ON messages(sender_id);
CREATE INDEX messages_pair ON messages(pair, sent_at);
-- Every index costs each message a B-tree insert: the hourly purge scans instead of keeping one.

-- Outbox items now point at their message (receipts too: `ref` is the message they are about).
ALTER TABLE outbox ADD COLUMN ref INTEGER REFERENCES messages(id) ON DELETE CASCADE;
CREATE INDEX outbox_ref ON outbox(ref);

-- Session tokens, stored hashed: a copy of the database does not log anyone in.
CREATE TABLE sessions (
    token_hash  BLOB PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions(user_id);

-- Uploaded files, stored once and named by id in messages.
CREATE TABLE attachments (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    -- zeroblob(size) at the start, filled in place by chunks (incremental blob I/O)
    data        BLOB NOT NULL,
    received    INTEGER NOT NULL DEFAULT 0,
    complete    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);

-- Messages waiting in a schema-1 outbox move into `messages`.
INSERT INTO messages (recipient_id, recipient_alias, message_id, sender_id, sender_alias, pair, text, sent_at)
    SELECT o.owner_id, u.alias, o.message_id, o.sender_id, o.sender_alias,
           CASE WHEN u.alias < o.sender_alias THEN u.alias || char(0) || o.sender_alias
                ELSE o.sender_alias || char(0) || u.alias END,
           o.text,
           CAST(strftime('%s', o.created_at) AS REAL)
    FROM outbox o JOIN users u ON u.id = o.owner_id WHERE o.kind = 1;
UPDATE outbox SET ref = (SELECT m.id FROM messages m
                         WHERE m.recipient_id = outbox.owner_id AND m.message_id = outbox.message_id),
                  text = ''
    WHERE kind = 1;
