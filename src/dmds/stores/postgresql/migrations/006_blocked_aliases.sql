-- dmds PostgreSQL schema 6: aliases blocked by an operator (`dmds admin block`), as SQLite's schema 6.
-- A table of its own, not a column of users: a block names an alias, so it outlives the account
-- (deleting a blocked user keeps the alias from being registered again by someone else) and may
-- reserve an alias nobody has. Additive: a node of schema 5 still running keeps working beside it
-- (one starting refuses the newer database), but does not look at it: a blocked user could still
-- log in through it, so upgrade every node.
CREATE TABLE blocked_aliases (
    alias       text PRIMARY KEY,
    blocked_at  float8 NOT NULL
);
