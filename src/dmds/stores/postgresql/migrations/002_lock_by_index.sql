-- dmds PostgreSQL schema 2: dmds_lock finds the senders of acknowledged messages by the unique index
-- (recipient_id, message_id), one probe per id. Planned generically (the arrays' sizes unknown) and
-- before autovacuum had analysed a new table, the join of schema 1 probed by recipient_id alone and
-- filtered each of the recipient's messages against each id: a 10,000-message drain spent 460 ms
-- of database CPU per batch in it. A LATERAL with LIMIT 1 cannot be flattened into that join.
CREATE OR REPLACE FUNCTION dmds_lock(aliases text[], owners text[], ids bigint[]) RETURNS bigint
LANGUAGE sql AS $$
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
