"""What the classic and the session shells share: the ``c> `` output, the command dispatch with usage
and help drawn from each shell's tables, the SOAP normaliser with its one note when it is down, the
aliases seen so far (for completion), and the wait for pushes still arriving before leaving."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final

from dmds.client.normalise import TextNormaliser
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

__all__ = [
    "ALIAS_AND_TEXT",
    "DRAIN_MAX_S",
    "DRAIN_QUIET_S",
    "PREFIX",
    "BaseShell",
    "Handler",
    "print_line",
    "printable",
    "valid_date",
]

PREFIX: Final = "c> "
#: At QUIT or end of input (non-interactive), pushes are awaited until none arrived for this long...
DRAIN_QUIET_S: Final = 0.5
#: ...but never for longer than this.
DRAIN_MAX_S: Final = 5.0
#: SEND's arguments: the alias, then the text (which may hold any whitespace).
ALIAS_AND_TEXT: Final = re.compile(r"(\S+)\s(.*)", re.DOTALL)
_DATE: Final = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")

#: A command's handler: (shell, the line after the command word, its words) -> None.
Handler = Callable[[Any, str, list[str]], Awaitable[None]]


def printable(text: str) -> str:
    """`text` from the network with control characters escaped, so it cannot drive the terminal."""
    return "".join(repr(ch)[1:-1] if ch != "\t" and unicodedata.category(ch) == "Cc" else ch for ch in text)


def valid_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.datetime.strptime(text, "%d/%m/%Y")
    except ValueError:
        return False
    return True


def print_line(line: str) -> None:
    # BrokenPipeError, ValueError: stdout was closed by its reader; there is nobody to tell.
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(line, flush=True)


class BaseShell:
    """What the classic and the session shells share: output, the normaliser, the aliases seen,
    usage and help from each shell's tables, and the wait for pushes still arriving before leaving."""

    #: command -> its usage line, and command -> what it does (each shell sets its own)
    USAGE_LINES: ClassVar[dict[str, str]] = {}
    HELP_LINES: ClassVar[dict[str, str]] = {}

    def __init__(self, ws_url: str, *, out: Callable[[str], None], normaliser: TextNormaliser | None) -> None:
        self._normaliser = normaliser or Normaliser(ws_url)
        self._normaliser_down = False
        self._out = out
        self._aliases: set[str] = set()
        self._last_activity = time.monotonic()

    def known_aliases(self) -> list[str]:
        """Aliases seen so far (registered, connected, listed, written to or heard from), sorted."""
        return sorted(self._aliases)

    def say(self, text: str) -> None:
        self._out(PREFIX + text)

    def _usage(self, command: str) -> None:
        self.say(f"usage: {self.USAGE_LINES[command]}")

    async def _help(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("HELP")
            return
        self.say("commands (the command word may be in any case):")
        width = max(len(u) for u in self.USAGE_LINES.values())
        for command, usage in self.USAGE_LINES.items():
            self._out(f"   {usage:<{width}}  {self.HELP_LINES[command]}")

    async def _quit(self, rest: str, args: list[str]) -> None:  # handled in _execute
        pass

    #: command -> handler, and the exceptions that mean "this command failed" (each shell sets its own)
    _HANDLERS: ClassVar[dict[str, Handler]] = {}
    FAILURES: ClassVar[tuple[type[Exception], ...]] = ()

    def _failure_text(self, exc: Exception) -> str:
        return str(exc)

    async def _execute(self, line: str) -> bool:
        """Run one command; False at QUIT."""
        parts = line.split(None, 1)
        if not parts:
            return True
        command = parts[0].upper()
        rest = parts[1] if len(parts) > 1 else ""
        args = rest.split()
        handler = self._HANDLERS.get(command)
        if handler is None:
            commands = ", ".join(self.USAGE_LINES)
            self.say(f"unknown command {printable(parts[0])!r}; commands: {commands} (HELP explains)")
            return True
        if command == "QUIT":
            if args:
                self._usage(command)
                return True
            return False
        name = "CONNECTED USERS" if command == "CONNECTEDUSERS" else command
        try:
            await handler(self, rest, args)
        except self.FAILURES as exc:
            self.say(f"{name} FAIL: {self._failure_text(exc)}")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C at a question
            self.say(f"{name} cancelled")
        return True

    async def _normalise(self, text: str) -> str:
        try:
            normalised = await self._normaliser.anormalise(text)
        except NormaliserUnavailable as exc:
            if not self._normaliser_down:
                self._normaliser_down = True
                self.say(f"normaliser unavailable ({exc}); sending text as typed")
            return text
        self._normaliser_down = False
        return normalised

    async def _wait_quiet(self) -> None:
        """Wait until no push arrived for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
        deadline = time.monotonic() + DRAIN_MAX_S
        while True:
            now = time.monotonic()
            until = min(self._last_activity + DRAIN_QUIET_S, deadline)
            if now >= until:
                return
            await asyncio.sleep(until - now)
