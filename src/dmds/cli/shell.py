"""The interactive command-line client of dmds: `dmds client` (classic protocol) and
`dmds client --session` (session protocol).

Classic commands, one a line, the command word in any case::

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

Session mode
------------
`SessionShell` is the same shell on the session protocol (`dmds.client.session`): one persistent
connection, opened at the first command that needs the server, resumed by the library when it drops.
Its commands::

    REGISTER <alias> <DD/MM/YYYY> <password> <full name...>
    LOGIN <alias> <password>
    LOGOUT
    SEND <alias> <message...>
    READ
    CONNECTEDUSERS
    HISTORY <alias> [<n>]
    HELP
    QUIT

LOGIN also watches presence: CONNECTEDUSERS answers from it, without asking the server, and changes
print as they come (``c> ONLINE maria``, ``c> OFFLINE maria``). Messages print as in the classic mode
and are acknowledged once the shell has them; receipts say which (``c> SEND MESSAGE 3 DELIVERED TO maria``,
``c> SEND MESSAGE 3 READ BY maria``). READ marks every message received so far read. Errors print the
text of `dmds.client.session.ERROR_TEXT` (``c> LOGIN FAIL: wrong alias or password``).

On a terminal, LOGIN <alias> and REGISTER <alias> <DD/MM/YYYY> ask for what was left out, the
password without echoing it, and the history file keeps LOGIN and REGISTER lines without their
password. QUIT or the end of input logs out (``c> LOGOUT OK``) after the pushes still arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import ssl
import sys
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, WordCompleter
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from dmds import __version__
from dmds.client.classic import ClassicClient, ClassicClientError, describe, request
from dmds.client.normalise import TextNormaliser
from dmds.client.oserrors import os_reason
from dmds.client.session import (
    ConnectionLost,
    Delivered,
    Disconnected,
    Event,
    Message,
    PresenceChanged,
    Read,
    Reconnected,
    SessionClient,
    SessionClientError,
    SessionError,
)
from dmds.protocols.classic import Disconnect, MessagePush, Push, ReceiptPush
from dmds.soap.normaliser import Normaliser, NormaliserUnavailable

if TYPE_CHECKING:
    from prompt_toolkit.completion import CompleteEvent, Completion
    from prompt_toolkit.document import Document

__all__ = [
    "DRAIN_MAX_S",
    "DRAIN_QUIET_S",
    "SESSION_USAGE",
    "USAGE",
    "SessionShell",
    "Shell",
    "run_client",
    "run_session_client",
]

PREFIX: Final = "c> "
#: At QUIT or end of input (non-interactive), pushes are awaited until none arrived for this long...
DRAIN_QUIET_S: Final = 0.5
#: ...but never for longer than this.
DRAIN_MAX_S: Final = 5.0
HISTORY_FILE: Final = ".dmds_history"
#: Session mode: messages HISTORY shows unless told, and at most (the protocol's bound).
HISTORY_LIMIT: Final = 20
MAX_HISTORY_LIMIT: Final = 500
#: Session mode: how long leaving waits for the LOGOUT to be answered.
LOGOUT_TIMEOUT_S: Final = 5.0
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


class _BaseShell:
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
    _HANDLERS: ClassVar[dict[str, Callable[[Any, str, list[str]], Awaitable[None]]]] = {}
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
            self.say(f"unknown command {_printable(parts[0])!r}; commands: {commands} (HELP explains)")
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


class Shell(_BaseShell):
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
        super().__init__(ws_url, out=out, normaliser=normaliser)
        self.session = ClassicClient(server, port, listen_host=listen_host, on_push=self._on_push)

    USAGE_LINES = USAGE
    HELP_LINES = _HELP

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

    #: what a failed command of this shell raises
    FAILURES = (ClassicClientError,)

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

    _HANDLERS: ClassVar[dict[str, Callable[[Any, str, list[str]], Awaitable[None]]]] = {
        "REGISTER": _register,
        "UNREGISTER": _unregister,
        "CONNECT": _connect,
        "DISCONNECT": _disconnect,
        "SEND": _send,
        "CONNECTEDUSERS": _connected_users,
        "HELP": _BaseShell._help,
        "QUIT": _BaseShell._quit,
    }

    def _result(self, operation: str, code: int) -> None:
        if code == 0:
            self.say(f"{operation} OK")
        else:
            self.say(f"{operation} FAIL: {describe(operation, code)}")

    async def drain_pushes(self) -> None:
        """While connected, wait until no push arrived for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
        if self.session.alias is None:
            return
        await self._wait_quiet()

    async def close(self) -> None:
        """DISCONNECT cleanly if connected (printing the result), then close the listener."""
        if self.session.alias is not None:
            try:
                self._result("DISCONNECT", await self.session.disconnect())
            except ClassicClientError as exc:
                self.say(f"DISCONNECT FAIL: {exc}")
        await self.session.close(disconnect=False)


# --- the session protocol ----------------------------------------------------------------------------

SESSION_USAGE: Final[dict[str, str]] = {
    "REGISTER": "REGISTER <alias> <DD/MM/YYYY> <password> <full name...>",
    "LOGIN": "LOGIN <alias> <password>",
    "LOGOUT": "LOGOUT",
    "SEND": "SEND <alias> <message...>",
    "READ": "READ",
    "CONNECTEDUSERS": "CONNECTEDUSERS",
    "HISTORY": "HISTORY <alias> [<n>]",
    "HELP": "HELP",
    "QUIT": "QUIT",
}
_SESSION_HELP: Final = {
    "REGISTER": "register a new user (on a terminal: REGISTER <alias> <DD/MM/YYYY> asks the rest)",
    "LOGIN": "log in and watch who is online (on a terminal: LOGIN <alias> asks the password)",
    "LOGOUT": "log out",
    "SEND": "send a message",
    "READ": "mark every message received so far read (their senders are told)",
    "CONNECTEDUSERS": "list the users online",
    "HISTORY": f"the last n messages with a user (default {HISTORY_LIMIT})",
    "HELP": "this list",
    "QUIT": "log out and leave",
}
_SESSION_ALIAS_COMMANDS: Final = frozenset({"LOGIN", "SEND", "HISTORY"})
_NOT_LOGGED_IN: Final = "not logged in (LOGIN <alias> <password> first)"

#: Asks the person at the terminal for a value: (prompt, hidden) -> the answer. Raises EOFError or
#: KeyboardInterrupt when they give up.
Ask = Callable[[str, bool], Awaitable[str]]


class _Failure(Exception):
    """A command failed for a reason already put in words."""


def _redact(line: str) -> str:
    """A session-mode command line as kept in the history file: without its password."""
    words = line.split()
    command = words[0].upper() if words else ""
    if command == "LOGIN" and len(words) > 2:
        return " ".join(words[:2])
    if command == "REGISTER" and len(words) > 3:
        return " ".join(words[:3])
    return line


class SessionShell(_BaseShell):
    """The shell on the session protocol: one persistent connection, opened at the first command
    that needs the server and reopened by the client library when it drops (the session resumes).

    Pushes (messages, receipts, presence changes) print as they arrive, except while a command runs:
    then they wait until its result is printed, so that ``SEND OK - MESSAGE 3`` always comes before
    ``SEND MESSAGE 3 DELIVERED TO maria``. Messages are acknowledged once handed to the shell. News of
    the connection (lost, back) print at once.
    """

    def __init__(
        self,
        server: str,
        port: int,
        ws_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        out: Callable[[str], None] = _print_line,
        normaliser: TextNormaliser | None = None,
        ask: Ask | None = None,
    ) -> None:
        super().__init__(ws_url, out=out, normaliser=normaliser)
        self.host, self.port = server, port
        self.ssl_context = ssl_context
        #: asks for what a command left out (passwords, hidden); None when not on a terminal
        self.ask = ask
        self.client: SessionClient | None = None
        self._unread: list[int] = []  # ids of the messages received and not yet marked read
        self._held: list[str] | None = None  # pushes waiting for the running command to finish

    @property
    def alias(self) -> str | None:
        """The logged-in alias, or None."""
        client = self.client
        return client.alias if client is not None and not client.closed else None

    USAGE_LINES = SESSION_USAGE
    HELP_LINES = _SESSION_HELP

    # -- pushes ---------------------------------------------------------------------------------------

    def _push(self, text: str) -> None:
        self._last_activity = time.monotonic()
        if self._held is not None:
            self._held.append(text)
        else:
            self.say(text)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Message):
            self._aliases.add(event.sender)
            self._unread.append(event.message_id)
            attachment = event.attachment
            extra = (
                f" [attachment {_printable(attachment.name)}, {attachment.size} bytes]"
                if attachment is not None
                else ""
            )
            sender, text = _printable(event.sender), _printable(event.text)
            self._push(f"MESSAGE {event.message_id} FROM {sender}: {text}{extra}")
        elif isinstance(event, Delivered):
            self._push(f"SEND MESSAGE {event.message_id} DELIVERED TO {_printable(event.to)}")
        elif isinstance(event, Read):
            self._push(f"SEND MESSAGE {event.message_id} READ BY {_printable(event.to)}")
        elif isinstance(event, PresenceChanged):
            self._aliases.add(event.alias)
            self._push(f"{'ONLINE' if event.online else 'OFFLINE'} {_printable(event.alias)}")
        elif isinstance(event, Disconnected):  # news of the connection print at once
            self._last_activity = time.monotonic()
            if event.reconnecting:
                self.say(f"connection lost ({event.reason}); reconnecting")
            else:
                self._unread.clear()
                self.say(f"DISCONNECTED: {event.reason}")
        elif isinstance(event, Reconnected):
            self.say("reconnected")

    # -- commands -------------------------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one command line; False once the shell should stop (QUIT)."""
        self._held = []
        try:
            return await self._execute(line.rstrip("\r\n"))
        finally:
            held, self._held = self._held, None
            for text in held:
                self.say(text)
            self._last_activity = time.monotonic()

    #: what a failed command of this shell raises (ValueError: a limit of the server's, such as text
    #: too long, or a field's bounds)
    FAILURES = (SessionClientError, _Failure, ValueError)

    def _failure_text(self, exc: Exception) -> str:
        return f"connection lost ({exc})" if isinstance(exc, ConnectionLost) else str(exc)

    async def _connection(self) -> SessionClient:
        """The client, connected (now if needed)."""
        if self.client is not None and not self.client.closed:
            return self.client
        try:
            self.client = await SessionClient.connect_any(
                self.host,
                self.port,
                ssl=self.ssl_context,
                client_name=f"dmds-cli/{__version__}",
                reconnect=True,
                on_event=self._on_event,
            )
        except ssl.SSLError as exc:
            where = f"{self.host}:{self.port}"
            raise _Failure(f"TLS with {where} failed ({os_reason(exc)})") from None
        except OSError as exc:
            raise _Failure(f"server unreachable ({self.host}:{self.port}: {os_reason(exc)})") from None
        return self.client

    def _logged_in(self, name: str) -> SessionClient | None:
        """The client if logged in; else says so (as `name` FAIL) and returns None."""
        client = self.client
        if client is None or client.closed or client.alias is None:
            self.say(f"{name} FAIL: {_NOT_LOGGED_IN}")
            return None
        return client

    async def _password(self, *, confirm: bool) -> str:
        assert self.ask is not None
        password = await self.ask("password: ", True)
        if confirm and await self.ask("password again: ", True) != password:
            raise _Failure("the passwords differ")
        return password

    async def _register(self, rest: str, args: list[str]) -> None:
        fields = rest.split(None, 3)
        if self.ask is not None and len(fields) == 2 and _valid_date(fields[1]):
            password = await self._password(confirm=True)
            full_name = (await self.ask("full name: ", False)).strip()
        elif len(fields) == 4 and _valid_date(fields[1]) and fields[3].strip():
            password, full_name = fields[2], fields[3].strip()
        else:
            self._usage("REGISTER")
            return
        alias, birth_date = fields[0], fields[1]
        client = await self._connection()
        await client.register(alias, full_name, birth_date, password)
        self._aliases.add(alias)
        self.say("REGISTER OK")

    async def _login(self, rest: str, args: list[str]) -> None:
        if self.ask is not None and len(args) == 1:
            password = None
        elif len(args) == 2:
            password = args[1]
        else:
            self._usage("LOGIN")
            return
        if self.alias is not None:
            self.say(f"LOGIN FAIL: already logged in as {self.alias}; LOGOUT first")
            return
        if password is None:
            password = await self._password(confirm=False)
        client = await self._connection()
        await client.login(args[0], password)
        self._unread.clear()
        self._aliases.add(args[0])
        self._aliases.update(await client.subscribe())
        self.say("LOGIN OK")

    async def _logout(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("LOGOUT")
            return
        client = self._logged_in("LOGOUT")
        if client is None:
            return
        await client.logout()
        self._unread.clear()
        self.say("LOGOUT OK")

    async def _send(self, rest: str, args: list[str]) -> None:
        match = _ALIAS_AND_TEXT.fullmatch(rest)
        if match is None or not match.group(2).strip():
            self._usage("SEND")
            return
        client = self._logged_in("SEND")
        if client is None:
            return
        dest, text = match.group(1), await self._normalise(match.group(2))
        accepted = await client.send(dest, text)
        self._aliases.add(dest)
        self.say(f"SEND OK - MESSAGE {accepted.message_id}")

    async def _read(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("READ")
            return
        client = self._logged_in("READ")
        if client is None:
            return
        ids, self._unread = self._unread, []
        await client.mark_read(ids)
        self.say(f"READ OK - {len(ids)} {'message' if len(ids) == 1 else 'messages'} marked read")

    async def _connected_users(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("CONNECTEDUSERS")
            return
        client = self._logged_in("CONNECTED USERS")
        if client is None:
            return
        aliases = sorted(client.online)
        self._aliases.update(aliases)
        listed = ", ".join(_printable(a) for a in aliases)
        self.say(f"CONNECTED USERS ({len(aliases)} users connected) OK - {listed}")

    async def _history(self, rest: str, args: list[str]) -> None:
        if not 1 <= len(args) <= 2 or (len(args) == 2 and not _valid_count(args[1])):
            self._usage("HISTORY")
            return
        client = self._logged_in("HISTORY")
        if client is None:
            return
        peer, limit = args[0], int(args[1]) if len(args) == 2 else HISTORY_LIMIT
        page = await client.history(peer, limit=limit)
        entries = page.entries[::-1]  # oldest first, as a conversation reads
        more = "; older ones: HISTORY with a larger n" if page.more else ""
        count = f"{len(entries)} {'message' if len(entries) == 1 else 'messages'}"
        self.say(f"HISTORY WITH {_printable(peer)} OK - {count}{more}")
        for entry in entries:
            when = datetime.datetime.fromtimestamp(entry.sent_at).strftime("%Y-%m-%d %H:%M")
            state = "read" if entry.read_at else "delivered" if entry.delivered_at else "not delivered"
            attachment = entry.attachment
            extra = f" [attachment {_printable(attachment.name)}]" if attachment is not None else ""
            self._out(
                f"   {when} #{entry.message_id} {_printable(entry.sender)} -> {_printable(entry.recipient)}:"
                f" {_printable(entry.text)}{extra} ({state})"
            )

    _HANDLERS: ClassVar[dict[str, Callable[[Any, str, list[str]], Awaitable[None]]]] = {
        "REGISTER": _register,
        "LOGIN": _login,
        "LOGOUT": _logout,
        "SEND": _send,
        "READ": _read,
        "CONNECTEDUSERS": _connected_users,
        "HISTORY": _history,
        "HELP": _BaseShell._help,
        "QUIT": _BaseShell._quit,
    }

    async def drain_pushes(self) -> None:
        """While logged in, wait until no push arrived for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
        if self.alias is None:
            return
        await self._wait_quiet()

    async def close(self) -> None:
        """LOGOUT if logged in (printing the result), then close the connection."""
        client, self.client = self.client, None
        if client is None:
            return
        if client.alias is not None and not client.closed:
            try:
                async with asyncio.timeout(LOGOUT_TIMEOUT_S):
                    await client.logout()
                self.say("LOGOUT OK")
            except SessionError as exc:
                self.say(f"LOGOUT FAIL: {exc}")
            except (SessionClientError, TimeoutError) as exc:
                self.say(f"LOGOUT FAIL: connection lost ({exc or 'timed out'})")
        await client.close()


def _valid_count(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= MAX_HISTORY_LIMIT


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


async def _run_script(shell: Shell | SessionShell) -> None:
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


class _RedactingFileHistory(_TolerantFileHistory):
    """Session mode: lines are kept without their password (`_redact`)."""

    def append_string(self, string: str) -> None:
        super().append_string(_redact(string))


class _RedactingMemoryHistory(InMemoryHistory):
    def append_string(self, string: str) -> None:
        super().append_string(_redact(string))


class _NoHistory(InMemoryHistory):
    """For the password prompt: remembers nothing."""

    def append_string(self, string: str) -> None:
        pass


class _ShellCompleter(Completer):
    """Command words first; then, after a command that takes an alias, the aliases seen so far."""

    def __init__(
        self,
        aliases: Callable[[], list[str]],
        commands: Iterable[str] = USAGE,
        alias_commands: frozenset[str] = _ALIAS_COMMANDS,
    ) -> None:
        self._commands = WordCompleter(list(commands), ignore_case=True)
        self._aliases = WordCompleter(aliases, WORD=True)
        self._alias_commands = alias_commands

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        words = before.split()
        in_word = bool(before) and not before[-1].isspace()
        if not words or (len(words) == 1 and in_word):
            yield from self._commands.get_completions(document, complete_event)
        elif words[0].upper() in self._alias_commands and len(words) == (2 if in_word else 1):
            yield from self._aliases.get_completions(document, complete_event)


async def _run_interactive(shell: Shell | SessionShell) -> None:
    path = _history_path()
    prompt: PromptSession[str]
    history: History
    if isinstance(shell, SessionShell):
        history = _RedactingMemoryHistory() if path is None else _RedactingFileHistory(path)
        completer = _ShellCompleter(shell.known_aliases, SESSION_USAGE, _SESSION_ALIAS_COMMANDS)
        prompt = PromptSession(history=history, completer=completer)
        secret: PromptSession[str] = PromptSession(history=_NoHistory())

        async def ask(question: str, hidden: bool) -> str:
            return await secret.prompt_async(question, is_password=hidden)

        shell.ask = ask
        where = f"dmds client (session protocol): server {shell.host}:{shell.port}"
    else:
        history = InMemoryHistory() if path is None else _TolerantFileHistory(path)
        prompt = PromptSession(history=history, completer=_ShellCompleter(shell.known_aliases))
        where = f"dmds client: server {shell.session.host}:{shell.session.port}"
    shell.say(f"{where}; HELP lists the commands")
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


def run_session_client(
    server: str, port: int, ws_url: str, *, ssl_context: ssl.SSLContext | None = None
) -> int:
    """Run the shell against the session server at (server, port) until QUIT or end of input."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    shell = SessionShell(server, port, ws_url, ssl_context=ssl_context)
    try:
        asyncio.run(_run_interactive(shell) if interactive else _run_script(shell))
    except KeyboardInterrupt:
        return 130
    return 0
