-- dmds SQLite schema 8: what a recipient has received, as a mark per user rather than a write per
-- message. Acks come in order, so every message to a user up to `delivered_upto` is delivered: an
-- ack raises the mark instead of rewriting each message's row and taking it out of a partial
-- index (which every message entered and left). A message delivered out of order (acked above an
-- unacked one, or read before it was acked) still gets its own delivered_at, until the mark
-- passes it. `deliveries` keeps when the mark rose, one row per rise, so that history still says
-- when each message was delivered: the first rise to or past its id.
ALTER TABLE users ADD COLUMN delivered_upto INTEGER NOT NULL DEFAULT 0;
CREATE TABLE deliveries (
    recipient_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    upto         INTEGER NOT NULL,
    at           REAL NOT NULL,
    PRIMARY KEY (recipient_id, upto)
) WITHOUT ROWID;
-- Rows delivered so far keep their delivered_at: the mark starts below each user's first
-- undelivered message.
UPDATE users SET delivered_upto = coalesce(
    (SELECT min(m.message_id) FROM messages m WHERE m.recipient_id = users.id AND m.delivered_at IS NULL),
    last_message_id + 1
) - 1;
DROP INDEX messages_undelivered;
