-- dmds PostgreSQL schema 7: a mark per batch that wrote, so that a node whose COMMIT broke can tell
-- whether that batch committed (engine.py). pg_xact_status alone cannot after a crash: an id whose
-- WAL never reached disk is handed out again, and then names another transaction. A batch inserts
-- its mark (its node, a token of the node's process) in its own transaction and deletes its node's
-- older ones but those still in doubt, so a node keeps one row, and one per batch in doubt.
-- Additive: a node of schema 6 still running writes no marks, and asks pg_xact_status alone.
CREATE TABLE commit_marks (
    node_id  text   NOT NULL,
    token    bigint NOT NULL,
    PRIMARY KEY (node_id, token)
);
