"""The interactive command-line client of dmds (`dmds client`), classic protocol.

Commands, one a line, the command word in any case::

    REGISTER <alias> <DD/MM/YYYY> <full name...>
    UNREGISTER <alias>
    CONNECT <alias>
    DISCONNECT [<alias>]
    SEND <alias> <message...>
    CONNECTEDUSERS
    HELP
    QUIT

Results print as the original client printed them (``c> REGISTER OK``, ``c> SEND OK - MESSAGE 3``),
failures with the reason in words (``c> REGISTER FAIL: alias already taken``), and so do the pushes
that arrive while connected (``c> MESSAGE 3 FROM juan123: hola``, ``c> SEND MESSAGE 3 OK``).

SEND passes the text through the SOAP normaliser first; when the normaliser is unavailable the text
is sent as typed, with one note until the normaliser works again.

On a terminal the shell reads with prompt_toolkit (history in ``~/.dmds_history``, completion of
commands and of the aliases seen so far, pushes printed above the line being typed). Otherwise it
reads commands line by line from stdin, which is how scripts and tests drive it: at QUIT or the end
of input it waits briefly for pushes still arriving, then disconnects cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import sys
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, WordCompleter
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from dmds.client.classic import ClassicClientError, ClassicSession, describe, request
from dmds.protocols.classic import Disconnect, MessagePush, Push, ReceiptPush
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

if TYPE_CHECKING:
    from prompt_toolkit.completion import CompleteEvent, Completion
    from prompt_toolkit.document import Document

__all__ = ["DRAIN_MAX_S", "DRAIN_QUIET_S", "USAGE", "Shell", "TextNormaliser", "run_client"]

PREFIX: Final = "c> "
#: At QUIT or end of input (non-interactive), pushes are awaited until none arrived for this long...
DRAIN_QUIET_S: Final = 0.5
#: ...but never for longer than this.
DRAIN_MAX_S: Final = 5.0
HISTORY_FILE: Final = ".dmds_history"
_READ_AHEAD: Final = 4

USAGE: Final[dict[str, str]] = {
    "REGISTER": "REGISTER <alias> <DD/MM/YYYY> <full name...>",
    "UNREGISTER": "UNREGISTER <alias>",
    "CONNECT": "CONNECT <alias>",
    "DISCONNECT": "DISCONNECT [<alias>]",
    "SEND": "SEND <alias> <message...>",
    "CONNECTEDUSERS": "CONNECTEDUSERS",
    "HELP": "HELP",
    "QUIT": "QUIT",
}
_HELP: Final = {
    "REGISTER": "register a new user",
    "UNREGISTER": "remove a user and its stored messages",
    "CONNECT": "connect as a user and receive its messages",
    "DISCONNECT": "disconnect (the connected user unless an alias is given)",
    "SEND": "send a message from the connected user",
    "CONNECTEDUSERS": "list the connected users",
    "HELP": "this list",
    "QUIT": "disconnect and leave",
}
#: Commands whose first argument is an alias (completed from the aliases seen so far).
_ALIAS_COMMANDS: Final = frozenset({"UNREGISTER", "CONNECT", "DISCONNECT", "SEND"})
_DATE: Final = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")
_ALIAS_AND_TEXT: Final = re.compile(r"(\S+)\s(.*)", re.DOTALL)
_NOT_CONNECTED: Final = "not connected (CONNECT <alias> first)"


def _printable(text: str) -> str:
    """`text` from the network with control characters escaped, so it cannot drive the terminal."""
    return "".join(repr(ch)[1:-1] if ch != "\t" and unicodedata.category(ch) == "Cc" else ch for ch in text)


def _valid_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.datetime.strptime(text, "%d/%m/%Y")
    except ValueError:
        return False
    return True


def _print_line(line: str) -> None:
    # BrokenPipeError, ValueError: stdout was closed by its reader; there is nobody to tell.
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(line, flush=True)


class TextNormaliser(Protocol):
    """What the shell needs of `Normaliser`: raises NormaliserUnavailable when it cannot help."""

    async def anormalise(self, text: str) -> str: ...


class Shell:
    """Executes the commands of one client; holds the session, the normaliser and what was seen."""

    def __init__(
        self,
        server: str,
        port: int,
        ws_url: str,
        *,
        listen_host: str = "0.0.0.0",
        out: Callable[[str], None] = _print_line,
        normaliser: TextNormaliser | None = None,
    ) -> None:
        self.session = ClassicSession(server, port, listen_host=listen_host, on_push=self._on_push)
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
        self.say(f"usage: {USAGE[command]}")

    def _on_push(self, push: Push) -> None:
        self._last_activity = time.monotonic()
        if isinstance(push, MessagePush):
            self._aliases.add(push.sender)
            self.say(f"MESSAGE {push.message_id} FROM {_printable(push.sender)}: {_printable(push.text)}")
        elif isinstance(push, ReceiptPush):
            self.say(f"SEND MESSAGE {push.message_id} OK")

    async def execute(self, line: str) -> bool:
        """Run one command line; False once the shell should stop (QUIT)."""
        try:
            return await self._execute(line.rstrip("\r\n"))
        finally:
            self._last_activity = time.monotonic()

    async def _execute(self, line: str) -> bool:
        parts = line.split(None, 1)
        if not parts:
            return True
        command = parts[0].upper()
        rest = parts[1] if len(parts) > 1 else ""
        args = rest.split()
        handler = self._HANDLERS.get(command)
        if handler is None:
            self.say(
                f"unknown command {_printable(parts[0])!r}; commands: {', '.join(USAGE)} (HELP explains)"
            )
            return True
        if command == "QUIT":
            if args:
                self._usage(command)
                return True
            return False
        try:
            await handler(self, rest, args)
        except ClassicClientError as exc:
            name = "CONNECTED USERS" if command == "CONNECTEDUSERS" else command
            self.say(f"{name} FAIL: {exc}")
        return True

    async def _register(self, rest: str, args: list[str]) -> None:
        fields = rest.split(None, 2)
        if len(fields) != 3 or not _valid_date(fields[1]):
            self._usage("REGISTER")
            return
        alias, birth_date, full_name = fields[0], fields[1], fields[2].strip()
        code = await self.session.register(full_name, alias, birth_date)
        if code == 0:
            self._aliases.add(alias)
        self._result("REGISTER", code)

    async def _unregister(self, rest: str, args: list[str]) -> None:
        if len(args) != 1:
            self._usage("UNREGISTER")
            return
        code = await self.session.unregister(args[0])
        if code == 0:
            self._aliases.discard(args[0])
        self._result("UNREGISTER", code)

    async def _connect(self, rest: str, args: list[str]) -> None:
        if len(args) != 1:
            self._usage("CONNECT")
            return
        if self.session.alias is not None:
            self.say(f"CONNECT FAIL: already connected as {self.session.alias}; DISCONNECT first")
            return
        try:
            code = await self.session.connect(args[0])
        except OSError as exc:
            self.say(f"CONNECT FAIL: cannot listen for messages on {self.session.listen_host} ({exc})")
            return
        if code == 0:
            self._aliases.add(args[0])
        self._result("CONNECT", code)

    async def _disconnect(self, rest: str, args: list[str]) -> None:
        if len(args) > 1:
            self._usage("DISCONNECT")
            return
        if args and args[0] != self.session.alias:
            # Another alias (a session left behind by a client that died): ask the server directly.
            reply = await request(
                self.session.host, self.session.port, Disconnect(args[0]), timeout_s=self.session.timeout_s
            )
            self._result("DISCONNECT", reply.code)
            return
        if self.session.alias is None:
            self.say("DISCONNECT FAIL: not connected")
            return
        self._result("DISCONNECT", await self.session.disconnect())

    async def _send(self, rest: str, args: list[str]) -> None:
        match = _ALIAS_AND_TEXT.fullmatch(rest)
        if match is None or not match.group(2).strip():
            self._usage("SEND")
            return
        if self.session.alias is None:
            self.say(f"SEND FAIL: {_NOT_CONNECTED}")
            return
        dest, text = match.group(1), await self._normalise(match.group(2))
        code, message_id = await self.session.send(dest, text)
        if code == 0:
            self._aliases.add(dest)
            self.say(f"SEND OK - MESSAGE {message_id}")
        else:
            self._result("SEND", code)

    async def _connected_users(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("CONNECTEDUSERS")
            return
        if self.session.alias is None:
            self.say(f"CONNECTED USERS FAIL: {_NOT_CONNECTED}")
            return
        code, aliases = await self.session.connected_users()
        if code != 0:
            self.say(f"CONNECTED USERS FAIL: {describe('CONNECTEDUSERS', code)}")
            return
        self._aliases.update(aliases)
        listed = ", ".join(_printable(a) for a in aliases)
        self.say(f"CONNECTED USERS ({len(aliases)} users connected) OK - {listed}")

    async def _help(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("HELP")
            return
        self.say("commands (the command word may be in any case):")
        width = max(len(u) for u in USAGE.values())
        for command, usage in USAGE.items():
            self._out(f"   {usage:<{width}}  {_HELP[command]}")

    async def _quit(self, rest: str, args: list[str]) -> None:  # handled in _execute
        pass

    _HANDLERS: Final[dict[str, Callable[[Shell, str, list[str]], Awaitable[None]]]] = {
        "REGISTER": _register,
        "UNREGISTER": _unregister,
        "CONNECT": _connect,
        "DISCONNECT": _disconnect,
        "SEND": _send,
        "CONNECTEDUSERS": _connected_users,
        "HELP": _help,
        "QUIT": _quit,
    }

    def _result(self, operation: str, code: int) -> None:
        if code == 0:
            self.say(f"{operation} OK")
        else:
            self.say(f"{operation} FAIL: {describe(operation, code)}")

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

    async def drain_pushes(self) -> None:
        """While connected, wait until no push arrived for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
        if self.session.alias is None:
            return
        deadline = time.monotonic() + DRAIN_MAX_S
        while True:
            now = time.monotonic()
            until = min(self._last_activity + DRAIN_QUIET_S, deadline)
            if now >= until:
                return
            await asyncio.sleep(until - now)

    async def close(self) -> None:
        """DISCONNECT cleanly if connected (printing the result), then close the listener."""
        if self.session.alias is not None:
            try:
                self._result("DISCONNECT", await self.session.disconnect())
            except ClassicClientError as exc:
                self.say(f"DISCONNECT FAIL: {exc}")
        await self.session.close(disconnect=False)


# --- input ---------------------------------------------------------------------------------------


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read by a daemon thread (works for pipes, files and devices alike).

    The thread uses os.read on the descriptor, not sys.stdin, so a read still blocked at exit holds
    no interpreter lock. It reads ahead at most _READ_AHEAD chunks of what was not consumed yet.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(_READ_AHEAD)
    fd = sys.stdin.fileno()

    def pump() -> None:
        data = b"-"
        while data:
            room.acquire()
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, data)
            except RuntimeError:  # the loop is closed: nobody is reading any more
                return

    threading.Thread(target=pump, name="dmds-client-stdin", daemon=True).start()
    pending = b""
    while True:
        data = await chunks.get()
        room.release()
        if not data:
            if pending:
                yield pending.decode("utf-8", errors="replace")
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")


async def _run_script(shell: Shell) -> None:
    try:
        async for line in _stdin_lines():
            if not await shell.execute(line):
                break
        await shell.drain_pushes()
    finally:
        await shell.close()


def _history_path() -> Path | None:
    try:
        return Path.home() / HISTORY_FILE
    except (RuntimeError, KeyError):  # no home directory to be found
        return None


class _TolerantFileHistory(FileHistory):
    """FileHistory that keeps working (in memory only) when its file cannot be read or written."""

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError:
            return []

    def store_string(self, string: str) -> None:
        with contextlib.suppress(OSError):
            super().store_string(string)


class _ShellCompleter(Completer):
    """Command words first; then, after a command that takes an alias, the aliases seen so far."""

    def __init__(self, aliases: Callable[[], list[str]]) -> None:
        self._commands = WordCompleter(list(USAGE), ignore_case=True)
        self._aliases = WordCompleter(aliases, WORD=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        words = before.split()
        in_word = bool(before) and not before[-1].isspace()
        if not words or (len(words) == 1 and in_word):
            yield from self._commands.get_completions(document, complete_event)
        elif words[0].upper() in _ALIAS_COMMANDS and len(words) == (2 if in_word else 1):
            yield from self._aliases.get_completions(document, complete_event)


async def _run_interactive(shell: Shell) -> None:
    path = _history_path()
    history = InMemoryHistory() if path is None else _TolerantFileHistory(path)
    prompt: PromptSession[str] = PromptSession(
        history=history, completer=_ShellCompleter(shell.known_aliases)
    )
    shell.say(f"dmds client: server {shell.session.host}:{shell.session.port}; HELP lists the commands")
    with patch_stdout():
        try:
            while True:
                try:
                    line = await prompt.prompt_async(PREFIX)
                except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C: as QUIT
                    break
                if not await shell.execute(line):
                    break
        finally:
            await shell.close()


def run_client(server: str, port: int, ws_url: str, *, listen_host: str = "0.0.0.0") -> int:
    """Run the shell against the classic server at (server, port) until QUIT or end of input."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    shell = Shell(server, port, ws_url, listen_host=listen_host)
    try:
        asyncio.run(_run_interactive(shell) if interactive else _run_script(shell))
    except KeyboardInterrupt:  # Ctrl-C while a command ran (or, from a script, at any time)
        return 130
    return 0
