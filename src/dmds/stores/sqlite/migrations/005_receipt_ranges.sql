-- dmds SQLite schema 5: delivery receipts as ranges. A sender's receipts for their messages to one
-- recipient are one row, whatever their number: "every message from owner to peer with an id in
-- (pushed, upto] is delivered, and its receipt waits", the way TCP and XMPP chat markers
-- (XEP-0333) acknowledge. A delivery raises `upto` (and renews `seq`, the owner's order), a push
-- raises `pushed`: one row written per sender and ack batch instead of an outbox row inserted and
-- deleted per message. Read receipts, which come in any order, keep their outbox rows, and so do
-- delivery receipts written by an earlier schema (pushed as before; a sender whose messages were
-- acknowledged out of order across the upgrade may see one of those receipts twice).
CREATE TABLE receipts (
    owner_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    upto      INTEGER NOT NULL,
    pushed    INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (owner_id, peer_id)
) WITHOUT ROWID;
CREATE INDEX receipts_waiting ON receipts(owner_id, seq) WHERE upto > pushed;
-- A user's deletion finds the rows about them through it (ON DELETE CASCADE).
CREATE INDEX receipts_peer ON receipts(peer_id);
