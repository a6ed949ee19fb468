"""The admin port's bearer token: made once, kept in a file only its owner can read.

The token is made at first start with `secrets` (32 random bytes, URL-safe) and written with mode
0600 before any byte of it is; later starts read it back, so a scraper's configuration stays valid
across restarts. Deleting the file makes a new token at the next start.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

#: The file's name in data_dir when `admin_token_file` is not set.
TOKEN_NAME = "admin-token"  # noqa: S105 - a file name, not a secret


def load_or_create(path: Path) -> str:
    """The token in `path`, made first if the file does not exist. Raises OSError, or ValueError
    for a file that is empty or that others can read (a token anyone can read guards nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two nodes starting on one data_dir do not both write a token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask
        out.write(token + "\n")
    return token


def _read(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise ValueError(f"{path}: empty; delete it to have a new token made")
    return token
