"""The shell on the session protocol (`dmds client --session`, on `dmds.client.session`): one persistent
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
password without echoing it (`Ask`). QUIT or the end of input logs out (``c> LOGOUT OK``) after the
pushes still arriving.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final

from dmds import __version__
from dmds.cli.shell.base import ALIAS_AND_TEXT, BaseShell, Handler, print_line, printable, valid_date
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

__all__ = [
    "HISTORY_LIMIT",
    "LOGOUT_TIMEOUT_S",
    "MAX_HISTORY_LIMIT",
    "SESSION_ALIAS_COMMANDS",
    "SESSION_HELP",
    "SESSION_USAGE",
    "Ask",
    "SessionShell",
]

#: Messages HISTORY shows unless told, and at most (the protocol's bound).
HISTORY_LIMIT: Final = 20
MAX_HISTORY_LIMIT: Final = 500
#: How long leaving waits for the LOGOUT to be answered.
LOGOUT_TIMEOUT_S: Final = 5.0

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
SESSION_HELP: Final = {
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
SESSION_ALIAS_COMMANDS: Final = frozenset({"LOGIN", "SEND", "HISTORY"})
_NOT_LOGGED_IN: Final = "not logged in (LOGIN <alias> <password> first)"

#: Asks the person at the terminal for a value: (prompt, hidden) -> the answer. Raises EOFError or
#: KeyboardInterrupt when they give up.
Ask = Callable[[str, bool], Awaitable[str]]


class _Failure(Exception):
    """A command failed for a reason already put in words."""


class SessionShell(BaseShell):
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
        out: Callable[[str], None] = print_line,
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
    HELP_LINES = SESSION_HELP

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
                f" [attachment {printable(attachment.name)}, {attachment.size} bytes]"
                if attachment is not None
                else ""
            )
            sender, text = printable(event.sender), printable(event.text)
            self._push(f"MESSAGE {event.message_id} FROM {sender}: {text}{extra}")
        elif isinstance(event, Delivered):
            self._push(f"SEND MESSAGE {event.message_id} DELIVERED TO {printable(event.to)}")
        elif isinstance(event, Read):
            self._push(f"SEND MESSAGE {event.message_id} READ BY {printable(event.to)}")
        elif isinstance(event, PresenceChanged):
            self._aliases.add(event.alias)
            self._push(f"{'ONLINE' if event.online else 'OFFLINE'} {printable(event.alias)}")
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
        if self.ask is not None and len(fields) == 2 and valid_date(fields[1]):
            password = await self._password(confirm=True)
            full_name = (await self.ask("full name: ", False)).strip()
        elif len(fields) == 4 and valid_date(fields[1]) and fields[3].strip():
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
        match = ALIAS_AND_TEXT.fullmatch(rest)
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
        listed = ", ".join(printable(a) for a in aliases)
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
        self.say(f"HISTORY WITH {printable(peer)} OK - {count}{more}")
        for entry in entries:
            when = datetime.datetime.fromtimestamp(entry.sent_at).strftime("%Y-%m-%d %H:%M")
            state = "read" if entry.read_at else "delivered" if entry.delivered_at else "not delivered"
            attachment = entry.attachment
            extra = f" [attachment {printable(attachment.name)}]" if attachment is not None else ""
            self._out(
                f"   {when} #{entry.message_id} {printable(entry.sender)} -> {printable(entry.recipient)}:"
                f" {printable(entry.text)}{extra} ({state})"
            )

    _HANDLERS: ClassVar[dict[str, Handler]] = {
        "REGISTER": _register,
        "LOGIN": _login,
        "LOGOUT": _logout,
        "SEND": _send,
        "READ": _read,
        "CONNECTEDUSERS": _connected_users,
        "HISTORY": _history,
        "HELP": BaseShell._help,
        "QUIT": BaseShell._quit,
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
