"""The shell's command history on a terminal: ``~/.dmds_history``, kept in memory only when the file
cannot be read or written, and in session mode without the passwords typed on LOGIN and REGISTER."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from prompt_toolkit.history import FileHistory, InMemoryHistory

__all__ = [
    "HISTORY_FILE",
    "NoHistory",
    "RedactingFileHistory",
    "RedactingMemoryHistory",
    "TolerantFileHistory",
    "history_path",
    "redact",
]

HISTORY_FILE: Final = ".dmds_history"


def history_path() -> Path | None:
    try:
        return Path.home() / HISTORY_FILE
    except (RuntimeError, KeyError):  # no home directory to be found
        return None


def redact(line: str) -> str:
    """A session-mode command line as kept in the history file: without its password."""
    words = line.split()
    command = words[0].upper() if words else ""
    if command == "LOGIN" and len(words) > 2:
        return " ".join(words[:2])
    if command == "REGISTER" and len(words) > 3:
        return " ".join(words[:3])
    return line


class TolerantFileHistory(FileHistory):
    """FileHistory that keeps working (in memory only) when its file cannot be read or written."""

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError:
            return []

    def store_string(self, string: str) -> None:
        with contextlib.suppress(OSError):
            super().store_string(string)


class RedactingFileHistory(TolerantFileHistory):
    """Session mode: lines are kept without their password (`redact`)."""

    def append_string(self, string: str) -> None:
        super().append_string(redact(string))


class RedactingMemoryHistory(InMemoryHistory):
    def append_string(self, string: str) -> None:
        super().append_string(redact(string))


class NoHistory(InMemoryHistory):
    """For the password prompt: remembers nothing."""

    def append_string(self, string: str) -> None:
        pass
