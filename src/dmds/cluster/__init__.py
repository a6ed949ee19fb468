"""Local multi-node set-ups: a throw-away PostgreSQL and several `dmds serve` nodes on it."""
