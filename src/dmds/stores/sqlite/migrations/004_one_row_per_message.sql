-- dmds SQLite schema 4: one row per message. A message no longer has an outbox row beside its
-- messages row: what is undelivered is found through a partial index, which a delivery leaves
-- (one B-tree entry) instead of an outbox row with two indexes being inserted and then deleted.
-- The outbox keeps the receipts. A message's seq is its messages.id; receipts take their seqs from
-- the same counter, so one owner's items still have one order.
CREATE INDEX messages_undelivered ON messages(recipient_id, id) WHERE delivered_at IS NULL;
DELETE FROM outbox WHERE kind = 1;
-- The receipts' seqs came from a counter of their own: move them above every message id (through
-- the negatives, so that no intermediate value meets another row's key).
UPDATE outbox SET seq = -seq;
UPDATE outbox SET seq = -seq + (SELECT coalesce(max(id), 0) FROM messages);
