-- dmds PostgreSQL schema 5: SQLite's schemas 4 and 5 on the shared database.
--
-- One row per message. An undelivered message has no outbox row beside its messages row: it carries
-- its outbox `seq` (still taken from outbox_seq under the recipient's users-row lock, so for each
-- owner seq order is commit order across nodes), and what waits is found through the partial index
-- messages_undelivered, which a delivery leaves. A message costs one heap row and its indexes
-- instead of that plus an outbox row with two indexes and three foreign keys, inserted and deleted.
--
-- Delivery receipts as ranges. A sender's receipts for their messages to one recipient are one
-- `receipts` row: "every message from owner to peer with an id in (pushed, upto] is delivered, and
-- its receipt waits". An ack raises `upto` up to the sender's first message to that recipient still
-- undelivered (a message acked above a gap is receipted when the gap closes) and renews `seq` under
-- the sender's users-row lock (with `after` from their last_seq, as schema 4); a push raises
-- `pushed`. Read receipts, which come in any order, keep their outbox rows, and so do delivery
-- receipts written by schema 4 (pushed and forgotten as before; a sender whose messages were acked
-- out of order across the upgrade may see one of them twice).
--
-- No rolling upgrade across this schema: a node of an earlier release reads messages from the outbox,
-- where none are now, and counts its recipients' stored messages by the outbox rows it deletes. So
-- the functions such a node calls to store and settle messages raise an error instead (its requests
-- fail with the store-failure error, never a false acknowledgement nor a count gone wrong): stop
-- every node, migrate, start the new release (docs/deploy.md, "Upgrading").

-- Every message outbox row moves into its message. A row that schema 1-4 never writes (a message
-- outbox row whose message is already delivered) stops the migration rather than being dropped.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox o JOIN messages m ON m.id = o.ref
               WHERE o.kind = 1 AND m.delivered_at IS NOT NULL) THEN
        RAISE EXCEPTION 'dmds schema 5: outbox holds messages marked delivered; not migrating';
    END IF;
END $$;
ALTER TABLE messages ADD COLUMN seq bigint;
UPDATE messages m SET seq = o.seq FROM outbox o WHERE o.kind = 1 AND o.ref = m.id;
DELETE FROM outbox WHERE kind = 1;
CREATE INDEX messages_undelivered ON messages(recipient_id, seq) WHERE delivered_at IS NULL;

CREATE TABLE receipts (
    owner_id  bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    peer_id   bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    upto      bigint NOT NULL,
    pushed    bigint NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (owner_id, peer_id)
);
CREATE INDEX receipts_waiting ON receipts(owner_id, seq) WHERE upto > pushed;
-- A user's deletion finds the rows about them through it (ON DELETE CASCADE).
CREATE INDEX receipts_peer ON receipts(peer_id);

-- The functions of schemas 1-4 that store and settle messages, for nodes of earlier releases.
CREATE OR REPLACE FUNCTION dmds_add_messages(
    senders text[], recipients text[], texts text[], keys text[], attachments bigint[], nows double precision[],
    max_stored bigint[], max_bytes bigint[]
) RETURNS TABLE (i int, status smallint, seq bigint, message_id bigint, sent_at double precision,
                 recipient text, att_name text, att_type text, att_size bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dmds: the database is at schema 5; this node runs an earlier release: stop it and upgrade';
END $$;
CREATE OR REPLACE FUNCTION dmds_add_messages_v3(
    senders text[], recipients text[], texts text[], keys text[], attachments bigint[], nows double precision[],
    max_stored bigint[], max_bytes bigint[]
) RETURNS TABLE (i int, status smallint, seq bigint, message_id bigint, sent_at double precision,
                 recipient text, att_name text, att_type text, att_size bigint, after_seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dmds: the database is at schema 5; this node runs an earlier release: stop it and upgrade';
END $$;
CREATE OR REPLACE FUNCTION dmds_settle(owner text, ids bigint[], now_s double precision, receipt smallint)
RETURNS TABLE (seq bigint, sender text, message_id bigint, recipient text, client_key text)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dmds: the database is at schema 5; this node runs an earlier release: stop it and upgrade';
END $$;
CREATE OR REPLACE FUNCTION dmds_settle_v3(owner text, ids bigint[], now_s double precision, receipt smallint)
RETURNS TABLE (seq bigint, sender text, message_id bigint, recipient text, client_key text,
               after_seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dmds: the database is at schema 5; this node runs an earlier release: stop it and upgrade';
END $$;

-- Store many messages in one round trip, as schema 4's dmds_add_messages_v3 (same arguments, same
-- answers), the seq going into the message row instead of an outbox row.
CREATE FUNCTION dmds_add_messages_v5(
    senders text[], recipients text[], texts text[], keys text[], attachments bigint[], nows double precision[],
    max_stored bigint[], max_bytes bigint[]
) RETURNS TABLE (i int, status smallint, seq bigint, message_id bigint, sent_at double precision,
                 recipient text, att_name text, att_type text, att_size bigint, after_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    k int;
    sid bigint;
    rid bigint;
    mid bigint;
    ref bigint;
    msize bigint;
    asize bigint;
BEGIN
    FOR k IN SELECT g FROM generate_subscripts(recipients, 1) AS g ORDER BY recipients[g], g LOOP
        i := k; seq := 0; message_id := 0; sent_at := nows[k]; recipient := recipients[k];
        att_name := NULL; att_type := NULL; att_size := NULL; after_seq := 0;
        SELECT u.id INTO sid FROM users u WHERE u.alias = senders[k];
        IF sid IS NULL THEN
            status := 2; RETURN NEXT; CONTINUE;
        END IF;
        IF keys[k] IS NOT NULL THEN
            SELECT m.recipient_alias, m.message_id, m.sent_at INTO recipient, message_id, sent_at
                FROM messages m WHERE m.sender_id = sid AND m.client_key = keys[k];
            IF FOUND THEN
                status := 1; RETURN NEXT; CONTINUE;
            END IF;
            recipient := recipients[k]; sent_at := nows[k];
        END IF;
        msize := octet_length(texts[k]);
        IF attachments[k] <> 0 THEN
            SELECT a.size, a.name, a.media_type INTO asize, att_name, att_type FROM attachments a
                WHERE a.id = attachments[k] AND a.owner_id = sid AND a.complete;
            IF NOT FOUND THEN
                status := 5; RETURN NEXT; CONTINUE;
            END IF;
            att_size := asize;
            msize := msize + asize;
        END IF;
        -- The seq is taken in the UPDATE, under the row lock the batch took first (dmds_lock): see
        -- outbox_seq. prev_seq: SET sees the row as it was.
        UPDATE users u SET last_message_id = u.last_message_id + 1, stored_messages = u.stored_messages + 1,
                           prev_seq = u.last_seq, last_seq = nextval('outbox_seq'),
                           stored_bytes = u.stored_bytes + msize
            WHERE u.alias = recipients[k] AND u.stored_messages < max_stored[k]
                  AND u.stored_bytes + msize <= max_bytes[k]
            RETURNING u.id, u.last_message_id, u.last_seq, u.prev_seq INTO rid, mid, seq, after_seq;
        IF NOT FOUND THEN
            seq := 0; after_seq := 0;
            IF EXISTS (SELECT 1 FROM users u WHERE u.alias = recipients[k]) THEN status := 4; ELSE status := 3; END IF;
            RETURN NEXT; CONTINUE;
        END IF;
        INSERT INTO messages (recipient_id, recipient_alias, message_id, sender_id, sender_alias, client_key,
                              pair, text, attachment_id, size, sent_at, seq)
            VALUES (rid, recipients[k], mid, sid, senders[k], keys[k],
                    CASE WHEN senders[k] < recipients[k] THEN senders[k] || ' ' || recipients[k]
                         ELSE recipients[k] || ' ' || senders[k] END,
                    texts[k], NULLIF(attachments[k], 0), msize, nows[k], seq)
            ON CONFLICT (sender_id, client_key) WHERE client_key IS NOT NULL DO NOTHING
            RETURNING id INTO ref;
        IF ref IS NULL THEN
            -- The same key through another node, committed while this waited for the row lock: give
            -- the id back (this transaction still holds the lock) and answer the first message.
            UPDATE users u SET last_message_id = u.last_message_id - 1, stored_messages = u.stored_messages - 1,
                               last_seq = u.prev_seq,
                               stored_bytes = u.stored_bytes - msize WHERE u.id = rid;
            SELECT m.recipient_alias, m.message_id, m.sent_at INTO recipient, message_id, sent_at
                FROM messages m WHERE m.sender_id = sid AND m.client_key = keys[k];
            seq := 0; after_seq := 0; status := 1; RETURN NEXT; CONTINUE;
        END IF;
        message_id := mid; status := 0;
        RETURN NEXT;
    END LOOP;
END $$;

-- A recipient received messages: marked delivered (out of messages_undelivered), counted off their
-- stored limit, and each sender's receipt range raised over what the recipient now has from them.
-- One row out per sender whose range grew: its new seq, the item before it, and the messages the
-- range newly covers (ids and keys, in id order).
CREATE FUNCTION dmds_deliver_v5(owner text, ids bigint[], now_s double precision)
RETURNS TABLE (seq bigint, sender text, after_seq bigint, covered bigint[], keys text[])
LANGUAGE plpgsql AS $$
DECLARE
    me bigint;
    mine bigint;
    freed_n bigint;
    freed_b bigint;
    sids bigint[];
    aliases text[];
    lows bigint[];
    k int;
    sid bigint;
    gap bigint;
    top bigint;
    below bigint;
BEGIN
    SELECT u.id, u.last_message_id INTO me, mine FROM users u WHERE u.alias = owner FOR NO KEY UPDATE;
    IF me IS NULL THEN RETURN; END IF;
    WITH s AS (
        UPDATE messages m SET delivered_at = now_s
            WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.delivered_at IS NULL
            RETURNING m.message_id, m.sender_id, m.sender_alias, m.size),
    g AS (SELECT s.sender_id, min(s.sender_alias) AS alias, min(s.message_id) AS low, count(*) AS n,
                 sum(s.size) AS b FROM s GROUP BY s.sender_id)
    SELECT array_agg(g.sender_id ORDER BY g.sender_id) FILTER (WHERE g.sender_id IS NOT NULL),
           array_agg(g.alias ORDER BY g.sender_id) FILTER (WHERE g.sender_id IS NOT NULL),
           array_agg(g.low ORDER BY g.sender_id) FILTER (WHERE g.sender_id IS NOT NULL),
           coalesce(sum(g.n), 0), coalesce(sum(g.b), 0)
        INTO sids, aliases, lows, freed_n, freed_b FROM g;
    IF freed_n = 0 THEN RETURN; END IF;  -- unknown, or already marked: a repeated Ack changes nothing
    UPDATE users u SET stored_messages = u.stored_messages - freed_n, stored_bytes = u.stored_bytes - freed_b
        WHERE u.id = me;
    FOR k IN 1 .. coalesce(array_length(sids, 1), 0) LOOP  -- none: the senders unregistered
        sid := sids[k];
        -- Up to the sender's first message still undelivered (per recipient, seq order is id order),
        -- or the top of the mailbox. The recipient's row lock keeps both still until COMMIT.
        SELECT m.message_id INTO gap FROM messages m
            WHERE m.recipient_id = me AND m.delivered_at IS NULL AND m.sender_id = sid ORDER BY m.seq LIMIT 1;
        top := CASE WHEN gap IS NULL THEN mine ELSE gap - 1 END;
        SELECT r.upto INTO below FROM receipts r WHERE r.owner_id = sid AND r.peer_id = me;
        IF NOT FOUND THEN
            -- A first range starts below the lowest message acked now: earlier ones were receipted
            -- one by one by schema 4, or are below the gap and wait for it to close.
            below := least(lows[k], top + 1) - 1;
        END IF;
        CONTINUE WHEN top <= below;  -- acked above a gap: receipted when it closes
        -- The sender's row lock (taken by dmds_lock) before its seq: see outbox_seq.
        UPDATE users u SET prev_seq = u.last_seq, last_seq = nextval('outbox_seq') WHERE u.id = sid
            RETURNING u.last_seq, u.prev_seq INTO seq, after_seq;
        INSERT INTO receipts AS r (owner_id, peer_id, upto, pushed, seq) VALUES (sid, me, top, below, seq)
            ON CONFLICT (owner_id, peer_id) DO UPDATE SET upto = excluded.upto, seq = excluded.seq;
        SELECT array_agg(m.message_id ORDER BY m.message_id), array_agg(coalesce(m.client_key, '') ORDER BY m.message_id)
            INTO covered, keys FROM messages m
            WHERE m.recipient_id = me AND m.message_id > below AND m.message_id <= top AND m.sender_id = sid
                  AND m.delivered_at IS NOT NULL;
        CONTINUE WHEN covered IS NULL;
        sender := aliases[k];
        RETURN NEXT;
    END LOOP;
END $$;

-- A recipient read messages: read_at set once (delivered too, if it was not: counted off the stored
-- limit), and a READ receipt outbox row for each sender that still exists. Each sender's row is
-- updated once per call (schema 4: a row updated per receipt makes each UPDATE walk its versions).
CREATE FUNCTION dmds_read_v5(owner text, ids bigint[], now_s double precision)
RETURNS TABLE (seq bigint, sender text, message_id bigint, recipient text, client_key text,
               after_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    me bigint;
    freed_n bigint;
    freed_b bigint;
    r record;
    cur bigint;
    top bigint;
BEGIN
    SELECT u.id INTO me FROM users u WHERE u.alias = owner FOR NO KEY UPDATE;
    IF me IS NULL THEN RETURN; END IF;
    WITH s AS (
        UPDATE messages m SET delivered_at = now_s
            WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.delivered_at IS NULL
            RETURNING m.size)
    SELECT count(*), coalesce(sum(s.size), 0) INTO freed_n, freed_b FROM s;
    IF freed_n > 0 THEN
        UPDATE users u SET stored_messages = u.stored_messages - freed_n, stored_bytes = u.stored_bytes - freed_b
            WHERE u.id = me;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS dmds_read (ref bigint, message_id bigint, sender_id bigint,
        sender_alias text, recipient_alias text, client_key text) ON COMMIT DELETE ROWS;
    DELETE FROM dmds_read;
    WITH s AS (
        UPDATE messages m SET read_at = now_s
            WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.read_at IS NULL
            RETURNING m.id, m.message_id, m.sender_id, m.sender_alias, m.recipient_alias, m.client_key)
    INSERT INTO dmds_read SELECT * FROM s;
    FOR r IN SELECT * FROM dmds_read s WHERE s.sender_id IS NOT NULL ORDER BY s.sender_id, s.message_id LOOP
        IF cur IS DISTINCT FROM r.sender_id THEN
            IF cur IS NOT NULL THEN
                UPDATE users u SET last_seq = top WHERE u.id = cur;
            END IF;
            -- The sender's row lock before its seqs: see outbox_seq.
            SELECT u.last_seq INTO top FROM users u WHERE u.id = r.sender_id FOR NO KEY UPDATE;
            cur := r.sender_id;
        END IF;
        after_seq := top;
        seq := nextval('outbox_seq');
        top := seq;
        INSERT INTO outbox (seq, owner_id, kind, message_id, sender_alias, sender_id, ref)
            VALUES (seq, r.sender_id, 3, r.message_id, '', NULL, r.ref);
        sender := r.sender_alias; message_id := r.message_id; recipient := r.recipient_alias;
        client_key := r.client_key;
        RETURN NEXT;
    END LOOP;
    IF cur IS NOT NULL THEN
        UPDATE users u SET last_seq = top WHERE u.id = cur;
    END IF;
END $$;
