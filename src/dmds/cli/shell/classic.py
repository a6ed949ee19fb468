"""The shell on the classic protocol (`dmds client`): one command a line, the command word in any case::

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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Final

from dmds.cli.shell.base import ALIAS_AND_TEXT, BaseShell, Handler, print_line, printable, valid_date
from dmds.client.classic import ClassicClient, ClassicClientError, describe, request
from dmds.client.normalise import TextNormaliser
from dmds.protocols.classic import Disconnect, MessagePush, Push, ReceiptPush

__all__ = ["ALIAS_COMMANDS", "HELP", "USAGE", "ClassicShell"]

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
HELP: Final = {
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
ALIAS_COMMANDS: Final = frozenset({"UNREGISTER", "CONNECT", "DISCONNECT", "SEND"})
_NOT_CONNECTED: Final = "not connected (CONNECT <alias> first)"


class ClassicShell(BaseShell):
    """Executes the commands of one client; holds the client, the normaliser and what was seen."""

    def __init__(
        self,
        server: str,
        port: int,
        ws_url: str,
        *,
        listen_host: str = "0.0.0.0",
        out: Callable[[str], None] = print_line,
        normaliser: TextNormaliser | None = None,
    ) -> None:
        super().__init__(ws_url, out=out, normaliser=normaliser)
        self.client = ClassicClient(server, port, listen_host=listen_host, on_push=self._on_push)

    USAGE_LINES = USAGE
    HELP_LINES = HELP

    def _on_push(self, push: Push) -> None:
        self._last_activity = time.monotonic()
        if isinstance(push, MessagePush):
            self._aliases.add(push.sender)
            self.say(f"MESSAGE {push.message_id} FROM {printable(push.sender)}: {printable(push.text)}")
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
        if len(fields) != 3 or not valid_date(fields[1]):
            self._usage("REGISTER")
            return
        alias, birth_date, full_name = fields[0], fields[1], fields[2].strip()
        code = await self.client.register(full_name, alias, birth_date)
        if code == 0:
            self._aliases.add(alias)
        self._result("REGISTER", code)

    async def _unregister(self, rest: str, args: list[str]) -> None:
        if len(args) != 1:
            self._usage("UNREGISTER")
            return
        code = await self.client.unregister(args[0])
        if code == 0:
            self._aliases.discard(args[0])
        self._result("UNREGISTER", code)

    async def _connect(self, rest: str, args: list[str]) -> None:
        if len(args) != 1:
            self._usage("CONNECT")
            return
        if self.client.alias is not None:
            self.say(f"CONNECT FAIL: already connected as {self.client.alias}; DISCONNECT first")
            return
        try:
            code = await self.client.connect(args[0])
        except OSError as exc:
            self.say(f"CONNECT FAIL: cannot listen for messages on {self.client.listen_host} ({exc})")
            return
        if code == 0:
            self._aliases.add(args[0])
        self._result("CONNECT", code)

    async def _disconnect(self, rest: str, args: list[str]) -> None:
        if len(args) > 1:
            self._usage("DISCONNECT")
            return
        if args and args[0] != self.client.alias:
            # Another alias (one left connected by a client that died): ask the server directly.
            reply = await request(
                self.client.host, self.client.port, Disconnect(args[0]), timeout_s=self.client.timeout_s
            )
            self._result("DISCONNECT", reply.code)
            return
        if self.client.alias is None:
            self.say("DISCONNECT FAIL: not connected")
            return
        self._result("DISCONNECT", await self.client.disconnect())

    async def _send(self, rest: str, args: list[str]) -> None:
        match = ALIAS_AND_TEXT.fullmatch(rest)
        if match is None or not match.group(2).strip():
            self._usage("SEND")
            return
        if self.client.alias is None:
            self.say(f"SEND FAIL: {_NOT_CONNECTED}")
            return
        dest, text = match.group(1), await self._normalise(match.group(2))
        code, message_id = await self.client.send(dest, text)
        if code == 0:
            self._aliases.add(dest)
            self.say(f"SEND OK - MESSAGE {message_id}")
        else:
            self._result("SEND", code)

    async def _connected_users(self, rest: str, args: list[str]) -> None:
        if args:
            self._usage("CONNECTEDUSERS")
            return
        if self.client.alias is None:
            self.say(f"CONNECTED USERS FAIL: {_NOT_CONNECTED}")
            return
        code, aliases = await self.client.connected_users()
        if code != 0:
            self.say(f"CONNECTED USERS FAIL: {describe('CONNECTEDUSERS', code)}")
            return
        self._aliases.update(aliases)
        listed = ", ".join(printable(a) for a in aliases)
        self.say(f"CONNECTED USERS ({len(aliases)} users connected) OK - {listed}")

    _HANDLERS: ClassVar[dict[str, Handler]] = {
        "REGISTER": _register,
        "UNREGISTER": _unregister,
        "CONNECT": _connect,
        "DISCONNECT": _disconnect,
        "SEND": _send,
        "CONNECTEDUSERS": _connected_users,
        "HELP": BaseShell._help,
        "QUIT": BaseShell._quit,
    }

    def _result(self, operation: str, code: int) -> None:
        if code == 0:
            self.say(f"{operation} OK")
        else:
            self.say(f"{operation} FAIL: {describe(operation, code)}")

    async def drain_pushes(self) -> None:
        """While connected, wait until no push arrived for DRAIN_QUIET_S (at most DRAIN_MAX_S)."""
        if self.client.alias is None:
            return
        await self._wait_quiet()

    async def close(self) -> None:
        """DISCONNECT cleanly if connected (printing the result), then close the listener."""
        if self.client.alias is not None:
            try:
                self._result("DISCONNECT", await self.client.disconnect())
            except ClassicClientError as exc:
                self.say(f"DISCONNECT FAIL: {exc}")
        await self.client.close(disconnect=False)
