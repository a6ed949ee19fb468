-- dmds SQLite schema 3: a leaner outbox. Every message and receipt passes through it, so each of
-- its B-trees and defaults is paid per message:
-- - seq is allocated by the store from a counter in memory (never reused while the process runs,
--   which is all a courier's cursor needs): no AUTOINCREMENT bookkeeping per row;
-- - no created_at (a strftime per row; nothing reads it);
-- - no index on sender_id: only a user's deletion looks rows up by it, and the outbox holds only
--   what is still undelivered.
CREATE TABLE outbox_v3 (
    seq          INTEGER PRIMARY KEY,
    owner_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         INTEGER NOT NULL,
    message_id   INTEGER NOT NULL,
    sender_alias TEXT NOT NULL DEFAULT '',
    sender_id    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    text         TEXT NOT NULL DEFAULT '',
    ref          INTEGER REFERENCES messages(id) ON DELETE CASCADE
);
INSERT INTO outbox_v3 (seq, owner_id, kind, message_id, sender_alias, sender_id, text, ref)
    SELECT seq, owner_id, kind, message_id, sender_alias, sender_id, text, ref FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;
CREATE INDEX outbox_owner ON outbox(owner_id, seq);
CREATE INDEX outbox_ref ON outbox(ref);
