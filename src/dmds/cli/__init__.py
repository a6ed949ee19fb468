"""The `dmds` command and its sub-commands."""
