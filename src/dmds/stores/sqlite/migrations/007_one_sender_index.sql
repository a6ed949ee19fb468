-- dmds SQLite schema 7: one index on a message's sender instead of two. The key index covered only
-- rows with a key, so a second index on sender_id served the users' deletion (ON DELETE SET NULL);
-- a unique index on (sender_id, client_key) over every row serves both (SQLite's UNIQUE lets rows
-- without a key, NULL, repeat), and each stored message writes one B-tree entry fewer.
DROP INDEX messages_sender;
DROP INDEX messages_key;
CREATE UNIQUE INDEX messages_key ON messages(sender_id, client_key);
