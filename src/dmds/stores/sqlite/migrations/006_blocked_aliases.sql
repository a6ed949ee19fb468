-- dmds SQLite schema 6: aliases blocked by an operator (`dmds admin block`). A table of its own, not
-- a column of users: a block names an alias, so it outlives the account (deleting a blocked user
-- keeps the alias from being registered again by someone else) and may reserve an alias nobody has.
CREATE TABLE blocked_aliases (
    alias       TEXT PRIMARY KEY,
    blocked_at  REAL NOT NULL
) WITHOUT ROWID;
