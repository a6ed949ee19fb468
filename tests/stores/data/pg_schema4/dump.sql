--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: dmds_add_messages(text[], text[], text[], text[], bigint[], double precision[], bigint[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.dmds_add_messages(senders text[], recipients text[], texts text[], keys text[], attachments bigint[], nows double precision[], max_stored bigint[], max_bytes bigint[]) RETURNS TABLE(i integer, status smallint, seq bigint, message_id bigint, sent_at double precision, recipient text, att_name text, att_type text, att_size bigint)
    LANGUAGE plpgsql
    AS $$
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
        att_name := NULL; att_type := NULL; att_size := NULL;
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
        UPDATE users u SET last_message_id = u.last_message_id + 1, stored_messages = u.stored_messages + 1,
                           stored_bytes = u.stored_bytes + msize
            WHERE u.alias = recipients[k] AND u.stored_messages < max_stored[k]
                  AND u.stored_bytes + msize <= max_bytes[k]
            RETURNING u.id, u.last_message_id INTO rid, mid;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM users u WHERE u.alias = recipients[k]) THEN status := 4; ELSE status := 3; END IF;
            RETURN NEXT; CONTINUE;
        END IF;
        INSERT INTO messages (recipient_id, recipient_alias, message_id, sender_id, sender_alias, client_key,
                              pair, text, attachment_id, size, sent_at)
            VALUES (rid, recipients[k], mid, sid, senders[k], keys[k],
                    CASE WHEN senders[k] < recipients[k] THEN senders[k] || ' ' || recipients[k]
                         ELSE recipients[k] || ' ' || senders[k] END,
                    texts[k], NULLIF(attachments[k], 0), msize, nows[k])
            ON CONFLICT (sender_id, client_key) WHERE client_key IS NOT NULL DO NOTHING
            RETURNING id INTO ref;
        IF ref IS NULL THEN
            -- The same key through another node, committed while this waited for the row lock: give
            -- the id back (this transaction still holds the lock) and answer the first message.
            UPDATE users u SET last_message_id = u.last_message_id - 1, stored_messages = u.stored_messages - 1,
                               stored_bytes = u.stored_bytes - msize WHERE u.id = rid;
            SELECT m.recipient_alias, m.message_id, m.sent_at INTO recipient, message_id, sent_at
                FROM messages m WHERE m.sender_id = sid AND m.client_key = keys[k];
            status := 1; RETURN NEXT; CONTINUE;
        END IF;
        -- After the recipient's row lock (the UPDATE above): see outbox_seq.
        seq := nextval('outbox_seq');
        INSERT INTO outbox (seq, owner_id, kind, message_id, sender_alias, sender_id, ref)
            VALUES (seq, rid, 1, mid, senders[k], sid, ref);
        message_id := mid; status := 0;
        RETURN NEXT;
    END LOOP;
END $$;


--
-- Name: dmds_add_messages_v3(text[], text[], text[], text[], bigint[], double precision[], bigint[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.dmds_add_messages_v3(senders text[], recipients text[], texts text[], keys text[], attachments bigint[], nows double precision[], max_stored bigint[], max_bytes bigint[]) RETURNS TABLE(i integer, status smallint, seq bigint, message_id bigint, sent_at double precision, recipient text, att_name text, att_type text, att_size bigint, after_seq bigint)
    LANGUAGE plpgsql
    AS $$
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
        -- The seq is taken in the UPDATE: the batch locked this row first (dmds_lock), so it is
        -- taken under the lock (see outbox_seq). prev_seq: SET sees the row as it was.
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
                              pair, text, attachment_id, size, sent_at)
            VALUES (rid, recipients[k], mid, sid, senders[k], keys[k],
                    CASE WHEN senders[k] < recipients[k] THEN senders[k] || ' ' || recipients[k]
                         ELSE recipients[k] || ' ' || senders[k] END,
                    texts[k], NULLIF(attachments[k], 0), msize, nows[k])
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
        INSERT INTO outbox (seq, owner_id, kind, message_id, sender_alias, sender_id, ref)
            VALUES (seq, rid, 1, mid, senders[k], sid, ref);
        message_id := mid; status := 0;
        RETURN NEXT;
    END LOOP;
END $$;


--
-- Name: dmds_lock(text[], text[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.dmds_lock(aliases text[], owners text[], ids bigint[]) RETURNS bigint
    LANGUAGE sql
    AS $$
    SELECT count(*) FROM (
        SELECT u.id FROM users u
        WHERE u.alias = ANY(aliases) OR u.id IN (
            SELECT m.sender_id FROM unnest(owners, ids) AS x(owner, mid)
            JOIN users r ON r.alias = x.owner
            CROSS JOIN LATERAL (
                SELECT s.sender_id FROM messages s
                WHERE s.recipient_id = r.id AND s.message_id = x.mid LIMIT 1
            ) m)
        ORDER BY u.id FOR NO KEY UPDATE OF u
    ) locked
$$;


--
-- Name: dmds_settle(text, bigint[], double precision, smallint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.dmds_settle(owner text, ids bigint[], now_s double precision, receipt smallint) RETURNS TABLE(seq bigint, sender text, message_id bigint, recipient text, client_key text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    me bigint;
    freed_n bigint;
    freed_b bigint;
    r record;
BEGIN
    SELECT u.id INTO me FROM users u WHERE u.alias = owner FOR NO KEY UPDATE;
    IF me IS NULL THEN RETURN; END IF;
    CREATE TEMP TABLE IF NOT EXISTS dmds_settled (ref bigint, message_id bigint, sender_id bigint,
        sender_alias text, recipient_alias text, client_key text, size bigint) ON COMMIT DELETE ROWS;
    DELETE FROM dmds_settled;
    IF receipt = 2 THEN
        WITH s AS (
            UPDATE messages m SET delivered_at = now_s
                WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.delivered_at IS NULL
                RETURNING m.id, m.message_id, m.sender_id, m.sender_alias, m.recipient_alias, m.client_key, m.size)
        INSERT INTO dmds_settled SELECT * FROM s;
    ELSE
        WITH s AS (
            UPDATE messages m SET read_at = now_s, delivered_at = coalesce(m.delivered_at, now_s)
                WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.read_at IS NULL
                RETURNING m.id, m.message_id, m.sender_id, m.sender_alias, m.recipient_alias, m.client_key, m.size)
        INSERT INTO dmds_settled SELECT * FROM s;
    END IF;
    WITH gone AS (
        DELETE FROM outbox o USING dmds_settled s WHERE o.kind = 1 AND o.ref = s.ref RETURNING s.size)
    SELECT count(*), coalesce(sum(gone.size), 0) INTO freed_n, freed_b FROM gone;
    IF freed_n > 0 THEN
        UPDATE users u SET stored_messages = u.stored_messages - freed_n, stored_bytes = u.stored_bytes - freed_b
            WHERE u.id = me;
    END IF;
    FOR r IN SELECT * FROM dmds_settled s WHERE s.sender_id IS NOT NULL ORDER BY s.sender_id, s.message_id LOOP
        -- The sender's row lock before its seq: see outbox_seq.
        PERFORM 1 FROM users u WHERE u.id = r.sender_id FOR NO KEY UPDATE;
        seq := nextval('outbox_seq');
        INSERT INTO outbox (seq, owner_id, kind, message_id, sender_alias, sender_id, ref)
            VALUES (seq, r.sender_id, receipt, r.message_id, '', NULL, r.ref);
        sender := r.sender_alias; message_id := r.message_id; recipient := r.recipient_alias;
        client_key := r.client_key;
        RETURN NEXT;
    END LOOP;
END $$;


--
-- Name: dmds_settle_v3(text, bigint[], double precision, smallint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.dmds_settle_v3(owner text, ids bigint[], now_s double precision, receipt smallint) RETURNS TABLE(seq bigint, sender text, message_id bigint, recipient text, client_key text, after_seq bigint)
    LANGUAGE plpgsql
    AS $$
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
    CREATE TEMP TABLE IF NOT EXISTS dmds_settled (ref bigint, message_id bigint, sender_id bigint,
        sender_alias text, recipient_alias text, client_key text, size bigint) ON COMMIT DELETE ROWS;
    DELETE FROM dmds_settled;
    IF receipt = 2 THEN
        WITH s AS (
            UPDATE messages m SET delivered_at = now_s
                WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.delivered_at IS NULL
                RETURNING m.id, m.message_id, m.sender_id, m.sender_alias, m.recipient_alias, m.client_key, m.size)
        INSERT INTO dmds_settled SELECT * FROM s;
    ELSE
        WITH s AS (
            UPDATE messages m SET read_at = now_s, delivered_at = coalesce(m.delivered_at, now_s)
                WHERE m.recipient_id = me AND m.message_id = ANY(ids) AND m.read_at IS NULL
                RETURNING m.id, m.message_id, m.sender_id, m.sender_alias, m.recipient_alias, m.client_key, m.size)
        INSERT INTO dmds_settled SELECT * FROM s;
    END IF;
    WITH gone AS (
        DELETE FROM outbox o USING dmds_settled s WHERE o.kind = 1 AND o.ref = s.ref RETURNING s.size)
    SELECT count(*), coalesce(sum(gone.size), 0) INTO freed_n, freed_b FROM gone;
    IF freed_n > 0 THEN
        UPDATE users u SET stored_messages = u.stored_messages - freed_n, stored_bytes = u.stored_bytes - freed_b
            WHERE u.id = me;
    END IF;
    -- One UPDATE of each sender's row per call, not per receipt: a row updated many times in one
    -- transaction makes every later UPDATE of it walk a longer chain of its versions.
    FOR r IN SELECT * FROM dmds_settled s WHERE s.sender_id IS NOT NULL ORDER BY s.sender_id, s.message_id LOOP
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
            VALUES (seq, r.sender_id, receipt, r.message_id, '', NULL, r.ref);
        sender := r.sender_alias; message_id := r.message_id; recipient := r.recipient_alias;
        client_key := r.client_key;
        RETURN NEXT;
    END LOOP;
    IF cur IS NOT NULL THEN
        UPDATE users u SET last_seq = top WHERE u.id = cur;
    END IF;
END $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: attachment_chunks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.attachment_chunks (
    attachment_id bigint NOT NULL,
    start bigint NOT NULL,
    data bytea NOT NULL
);


--
-- Name: attachments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.attachments (
    id bigint NOT NULL,
    owner_id bigint,
    name text NOT NULL,
    media_type text NOT NULL,
    size bigint NOT NULL,
    received bigint DEFAULT 0 NOT NULL,
    complete boolean DEFAULT false NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: attachments_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.attachments ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.attachments_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: dmds_schema; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.dmds_schema (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: messages; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.messages (
    id bigint NOT NULL,
    recipient_id bigint NOT NULL,
    recipient_alias text NOT NULL,
    message_id bigint NOT NULL,
    sender_id bigint,
    sender_alias text NOT NULL,
    client_key text,
    pair text NOT NULL,
    text text NOT NULL,
    attachment_id bigint,
    size bigint DEFAULT 0 NOT NULL,
    sent_at double precision NOT NULL,
    delivered_at double precision,
    read_at double precision
);


--
-- Name: messages_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.messages ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.messages_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: nodes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.nodes (
    node_id text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.outbox (
    seq bigint NOT NULL,
    owner_id bigint NOT NULL,
    kind smallint NOT NULL,
    message_id bigint NOT NULL,
    sender_alias text DEFAULT ''::text NOT NULL,
    sender_id bigint,
    ref bigint
);


--
-- Name: outbox_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.outbox_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: presence; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.presence (
    alias text NOT NULL,
    node_id text NOT NULL,
    classic boolean NOT NULL,
    address text DEFAULT ''::text NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sessions (
    token_hash bytea NOT NULL,
    user_id bigint NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL
);


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    id bigint NOT NULL,
    alias text NOT NULL,
    full_name text NOT NULL,
    birth_date text NOT NULL,
    registered_at text DEFAULT to_char((now() AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'::text) NOT NULL,
    password_hash text,
    last_message_id bigint DEFAULT 0 NOT NULL,
    stored_messages bigint DEFAULT 0 NOT NULL,
    stored_bytes bigint DEFAULT 0 NOT NULL,
    last_seq bigint DEFAULT 0 NOT NULL,
    prev_seq bigint DEFAULT 0 NOT NULL
);


--
-- Name: users_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.users ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.users_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Data for Name: attachment_chunks; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.attachment_chunks VALUES (1, 0, '\x68656c6c6f');


--
-- Data for Name: attachments; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.attachments VALUES (1, 3, 'a.txt', 'text/plain', 5, 5, true, 1);


--
-- Data for Name: dmds_schema; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.dmds_schema VALUES (1, '001_initial.sql', '2026-12-07 00:46:23.815061+00');
INSERT INTO public.dmds_schema VALUES (2, '002_lock_by_index.sql', '2026-12-07 00:46:23.876487+00');
INSERT INTO public.dmds_schema VALUES (3, '003_offer_after.sql', '2026-12-07 00:46:23.881494+00');
INSERT INTO public.dmds_schema VALUES (4, '004_last_seq.sql', '2026-12-07 00:46:23.883828+00');


--
-- Data for Name: messages; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.messages VALUES (2, 2, 'bob', 2, 1, 'ana', 'k-a2', 'ana bob', 'a2', NULL, 2, 12, NULL, NULL);
INSERT INTO public.messages VALUES (3, 2, 'bob', 3, 3, 'carl', NULL, 'bob carl', 'c1', NULL, 2, 13, NULL, NULL);
INSERT INTO public.messages VALUES (7, 5, 'dora', 1, 1, 'ana', NULL, 'ana dora', 'a3', NULL, 2, 17, NULL, NULL);
INSERT INTO public.messages VALUES (8, 5, 'dora', 2, 3, 'carl', NULL, 'carl dora', 'c2', NULL, 2, 18, NULL, NULL);
INSERT INTO public.messages VALUES (10, 2, 'bob', 4, 4, 'eve', 'k-e1', 'bob eve', 'e1', NULL, 2, 20, NULL, NULL);
INSERT INTO public.messages VALUES (12, 2, 'bob', 6, 4, 'eve', 'k-e3', 'bob eve', 'e3', NULL, 2, 22, NULL, NULL);
INSERT INTO public.messages VALUES (5, 1, 'ana', 2, 2, 'bob', 'k-b2', 'ana bob', 'b2', NULL, 2, 15, 20, NULL);
INSERT INTO public.messages VALUES (9, 1, 'ana', 4, 3, 'carl', NULL, 'ana carl', 'file', 1, 9, 19, 20, NULL);
INSERT INTO public.messages VALUES (4, 1, 'ana', 1, 2, 'bob', NULL, 'ana bob', 'b1', NULL, 2, 14, 20, 21);
INSERT INTO public.messages VALUES (6, 1, 'ana', 3, 5, 'dora', 'k-d1', 'ana dora', 'd1', NULL, 2, 16, 20, 21);
INSERT INTO public.messages VALUES (13, 2, 'bob', 7, 3, 'carl', NULL, 'bob carl', 'late 0', NULL, 6, 23, NULL, NULL);
INSERT INTO public.messages VALUES (14, 2, 'bob', 8, 3, 'carl', NULL, 'bob carl', 'late 1', NULL, 6, 24, NULL, NULL);
INSERT INTO public.messages VALUES (15, 2, 'bob', 9, 3, 'carl', NULL, 'bob carl', 'late 2', NULL, 6, 25, NULL, NULL);
INSERT INTO public.messages VALUES (16, 2, 'bob', 10, 3, 'carl', NULL, 'bob carl', 'late 3', NULL, 6, 26, NULL, NULL);
INSERT INTO public.messages VALUES (1, 2, 'bob', 1, 1, 'ana', NULL, 'ana bob', 'a1', NULL, 2, 11, 22, NULL);
INSERT INTO public.messages VALUES (11, 2, 'bob', 5, 4, 'eve', 'k-e2', 'bob eve', 'e2', NULL, 2, 21, 23, NULL);
INSERT INTO public.messages VALUES (17, 1, 'ana', 5, 4, 'eve', NULL, 'ana eve', 'to ana, waiting', NULL, 15, 27, NULL, NULL);


--
-- Data for Name: nodes; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: outbox; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.outbox VALUES (2, 2, 1, 2, 'ana', 1, 2);
INSERT INTO public.outbox VALUES (3, 2, 1, 3, 'carl', 3, 3);
INSERT INTO public.outbox VALUES (7, 5, 1, 1, 'ana', 1, 7);
INSERT INTO public.outbox VALUES (8, 5, 1, 2, 'carl', 3, 8);
INSERT INTO public.outbox VALUES (10, 2, 1, 4, 'eve', 4, 10);
INSERT INTO public.outbox VALUES (12, 2, 1, 6, 'eve', 4, 12);
INSERT INTO public.outbox VALUES (13, 2, 2, 1, '', NULL, 4);
INSERT INTO public.outbox VALUES (14, 2, 2, 2, '', NULL, 5);
INSERT INTO public.outbox VALUES (15, 3, 2, 4, '', NULL, 9);
INSERT INTO public.outbox VALUES (16, 5, 2, 3, '', NULL, 6);
INSERT INTO public.outbox VALUES (17, 2, 3, 1, '', NULL, 4);
INSERT INTO public.outbox VALUES (18, 5, 3, 3, '', NULL, 6);
INSERT INTO public.outbox VALUES (19, 2, 1, 7, 'carl', 3, 13);
INSERT INTO public.outbox VALUES (20, 2, 1, 8, 'carl', 3, 14);
INSERT INTO public.outbox VALUES (21, 2, 1, 9, 'carl', 3, 15);
INSERT INTO public.outbox VALUES (22, 2, 1, 10, 'carl', 3, 16);
INSERT INTO public.outbox VALUES (24, 4, 2, 5, '', NULL, 11);
INSERT INTO public.outbox VALUES (25, 1, 1, 5, 'eve', 4, 17);


--
-- Data for Name: presence; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: sessions; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.sessions VALUES ('\x7474747474747474747474747474747474747474747474747474747474747474', 5, 1, 4000000000);


--
-- Data for Name: users; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.users VALUES (3, 'carl', 'Carl', '01/02/2000', '2026-12-07T00:46:23.901Z', NULL, 0, 0, 0, 15, 0);
INSERT INTO public.users VALUES (5, 'dora', 'Dora', '03/04/1990', '2026-12-07T00:46:23.903Z', '$argon2id$fake', 2, 2, 4, 18, 7);
INSERT INTO public.users VALUES (2, 'bob', 'Bob', '01/02/2000', '2026-12-07T00:46:23.900Z', NULL, 10, 8, 32, 22, 21);
INSERT INTO public.users VALUES (4, 'eve', 'Eve', '01/02/2000', '2026-12-07T00:46:23.902Z', NULL, 0, 0, 0, 24, 0);
INSERT INTO public.users VALUES (1, 'ana', 'Ana', '01/02/2000', '2026-12-07T00:46:23.896Z', NULL, 5, 1, 15, 25, 23);


--
-- Name: attachments_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.attachments_id_seq', 1, true);


--
-- Name: messages_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.messages_id_seq', 17, true);


--
-- Name: outbox_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.outbox_seq', 25, true);


--
-- Name: users_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.users_id_seq', 5, true);


--
-- Name: attachment_chunks attachment_chunks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.attachment_chunks
    ADD CONSTRAINT attachment_chunks_pkey PRIMARY KEY (attachment_id, start);


--
-- Name: attachments attachments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.attachments
    ADD CONSTRAINT attachments_pkey PRIMARY KEY (id);


--
-- Name: dmds_schema dmds_schema_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.dmds_schema
    ADD CONSTRAINT dmds_schema_pkey PRIMARY KEY (version);


--
-- Name: messages messages_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_pkey PRIMARY KEY (id);


--
-- Name: messages messages_recipient_id_message_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_recipient_id_message_id_key UNIQUE (recipient_id, message_id);


--
-- Name: nodes nodes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.nodes
    ADD CONSTRAINT nodes_pkey PRIMARY KEY (node_id);


--
-- Name: outbox outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (seq);


--
-- Name: presence presence_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.presence
    ADD CONSTRAINT presence_pkey PRIMARY KEY (alias);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (token_hash);


--
-- Name: users users_alias_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_alias_key UNIQUE (alias);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: messages_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX messages_key ON public.messages USING btree (sender_id, client_key) WHERE (client_key IS NOT NULL);


--
-- Name: messages_pair; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX messages_pair ON public.messages USING btree (pair, sent_at);


--
-- Name: messages_sender; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX messages_sender ON public.messages USING btree (sender_id);


--
-- Name: outbox_owner; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX outbox_owner ON public.outbox USING btree (owner_id, seq);


--
-- Name: outbox_ref; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX outbox_ref ON public.outbox USING btree (ref);


--
-- Name: presence_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX presence_node ON public.presence USING btree (node_id);


--
-- Name: sessions_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sessions_user ON public.sessions USING btree (user_id);


--
-- Name: attachment_chunks attachment_chunks_attachment_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.attachment_chunks
    ADD CONSTRAINT attachment_chunks_attachment_id_fkey FOREIGN KEY (attachment_id) REFERENCES public.attachments(id) ON DELETE CASCADE;


--
-- Name: attachments attachments_owner_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.attachments
    ADD CONSTRAINT attachments_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES public.users(id) ON DELETE SET NULL;


--
-- Name: messages messages_attachment_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_attachment_id_fkey FOREIGN KEY (attachment_id) REFERENCES public.attachments(id);


--
-- Name: messages messages_recipient_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_recipient_id_fkey FOREIGN KEY (recipient_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: messages messages_sender_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_sender_id_fkey FOREIGN KEY (sender_id) REFERENCES public.users(id) ON DELETE SET NULL;


--
-- Name: outbox outbox_owner_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: outbox outbox_ref_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_ref_fkey FOREIGN KEY (ref) REFERENCES public.messages(id) ON DELETE CASCADE;


--
-- Name: outbox outbox_sender_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_sender_id_fkey FOREIGN KEY (sender_id) REFERENCES public.users(id) ON DELETE SET NULL;


--
-- Name: presence presence_alias_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.presence
    ADD CONSTRAINT presence_alias_fkey FOREIGN KEY (alias) REFERENCES public.users(alias) ON UPDATE CASCADE ON DELETE CASCADE;


--
-- Name: presence presence_node_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.presence
    ADD CONSTRAINT presence_node_id_fkey FOREIGN KEY (node_id) REFERENCES public.nodes(node_id) ON DELETE CASCADE;


--
-- Name: sessions sessions_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


