"""`dmds client --session`: the shell on the session protocol, as real subprocesses driven through
stdin pipes (and one through a pseudo-terminal) against a real `dmds serve`, next to a classic one."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmds.cli.shell import SessionShell
from dmds.client.session import Disconnected
from tests.client.test_shell import HOST, NO_WS, NOTE, ShellProcess, Terminal, _free_port
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(90)

PASSWORD = "secret password"
PW = "secretpw"  # one word: as typed on a command line


class SessionShellProcess(ShellProcess):
    """A `dmds client --session` subprocess (see ShellProcess)."""

    def __init__(self, port: int) -> None:  # not super(): it starts a classic one
        args = [
            sys.executable, "-m", "dmds.cli.main", "client", "--session",
            "-s", HOST, "-p", str(port), "--ws", NO_WS,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._read = 0
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self.stderr = ""


@pytest.fixture
def shells() -> Iterator[Callable[[int], ShellProcess]]:
    """Session shells; `classic(port)` for classic ones."""
    started: list[ShellProcess] = []

    def make(port: int) -> ShellProcess:
        shell = SessionShellProcess(port)
        started.append(shell)
        return shell

    yield make
    for shell in started:
        shell.kill()


@pytest.fixture
def classic() -> Iterator[Callable[[int], ShellProcess]]:
    started: list[ShellProcess] = []

    def make(port: int) -> ShellProcess:
        shell = ShellProcess(port)
        started.append(shell)
        return shell

    yield make
    for shell in started:
        shell.kill()


def test_two_users_exchange_messages_with_receipts(
    server: ServerProcess, shells: Callable[[int], ShellProcess]
) -> None:
    juan, maria = shells(server.session_port), shells(server.session_port)
    juan.send(f"REGISTER juan 01/02/2000 {PW} Juan Perez", f"LOGIN juan {PW}")
    juan.expect("c> REGISTER OK")
    juan.expect("c> LOGIN OK")
    maria.send(f"register maria 03/04/1999 {PW} María   López", f"Login maria {PW}")
    maria.expect("c> REGISTER OK")
    maria.expect("c> LOGIN OK")
    juan.expect("c> ONLINE maria")

    juan.send("SEND maria Hola soy Juan")
    juan.expect("c> SEND OK - MESSAGE 1")
    maria.expect("c> MESSAGE 1 FROM juan: Hola soy Juan")
    juan.expect("c> SEND MESSAGE 1 DELIVERED TO maria")
    maria.send("READ")
    maria.expect("c> READ OK - 1 message marked read")
    juan.expect("c> SEND MESSAGE 1 READ BY maria")

    maria.send("SEND juan hola, ¿qué tal?")
    maria.expect("c> SEND OK - MESSAGE 1")
    juan.expect("c> MESSAGE 1 FROM maria: hola, ¿qué tal?")
    maria.expect("c> SEND MESSAGE 1 DELIVERED TO juan")
    maria.send("CONNECTEDUSERS")
    maria.expect("c> CONNECTED USERS (2 users connected) OK - juan, maria")

    juan.send("HISTORY maria")
    juan.expect("c> HISTORY WITH maria OK - 2 messages")
    first = juan.expect_prefix("   ")
    assert first.endswith(" #1 juan -> maria: Hola soy Juan (read)")
    assert juan.expect_prefix("   ").endswith(" #1 maria -> juan: hola, ¿qué tal? (delivered)")

    juan_out = juan.finish("QUIT")
    maria.expect("c> OFFLINE juan")
    maria_out = maria.finish()  # end of input: as QUIT
    for out in (juan_out, maria_out):
        assert out[-1] == "c> LOGOUT OK"  # logged out cleanly before leaving
        assert sum(NOTE in line for line in out) == 1, out  # the note once, not at every SEND


def test_stored_messages_arrive_before_leaving(
    server: ServerProcess, shells: Callable[[int], ShellProcess]
) -> None:
    shells(server.session_port).finish(f"REGISTER maria 01/02/2000 {PW} Maria")
    juan = shells(server.session_port)
    juan.send(f"REGISTER juan 01/02/2000 {PW} Juan", f"LOGIN juan {PW}")
    texts = [f"mensaje {n}" for n in range(1, 4)]
    juan.send(*(f"SEND maria {text}" for text in texts))
    juan.expect("c> SEND OK - MESSAGE 3")
    out = shells(server.session_port).finish(f"LOGIN maria {PW}")  # then end of input: pushes awaited
    assert [line for line in out if line.startswith("c> MESSAGE")] == [
        f"c> MESSAGE {n} FROM juan: {text}" for n, text in enumerate(texts, start=1)
    ]
    assert out[-1] == "c> LOGOUT OK"
    for n in range(1, 4):
        juan.expect(f"c> SEND MESSAGE {n} DELIVERED TO maria")
    juan.finish()


def test_errors_in_words(server: ServerProcess, shells: Callable[[int], ShellProcess]) -> None:
    out = shells(server.session_port).finish(
        "SEND maria hola",
        "READ",
        "LOGOUT",
        "CONNECTEDUSERS",
        "HISTORY maria",
        f"REGISTER juan 01/02/2000 {PW} Juan",
        f"REGISTER juan 01/02/2000 {PW} Juan Again",
        "REGISTER pepe 01/02/2000 short Pepe",
        "LOGIN juan wrongpass",
        "LOGIN nobody wrongpass",
        f"LOGIN juan {PW}",
        f"LOGIN juan {PW}",
        "SEND nobody hola",
        "HISTORY nobody",
    )
    assert [line for line in out if NOTE not in line] == [
        "c> SEND FAIL: not logged in (LOGIN <alias> <password> first)",
        "c> READ FAIL: not logged in (LOGIN <alias> <password> first)",
        "c> LOGOUT FAIL: not logged in (LOGIN <alias> <password> first)",
        "c> CONNECTED USERS FAIL: not logged in (LOGIN <alias> <password> first)",
        "c> HISTORY FAIL: not logged in (LOGIN <alias> <password> first)",
        "c> REGISTER OK",
        "c> REGISTER FAIL: alias already taken",
        "c> REGISTER FAIL: invalid value: password shorter than 8 characters",
        "c> LOGIN FAIL: wrong alias or password",
        "c> LOGIN FAIL: wrong alias or password",
        "c> LOGIN OK",
        "c> LOGIN FAIL: already logged in as juan; LOGOUT first",
        "c> SEND FAIL: no such user: nobody",
        "c> HISTORY WITH nobody OK - 0 messages",
        "c> LOGOUT OK",
    ]


def test_bad_commands_print_usage_and_nothing_asks_the_server(
    shells: Callable[[int], ShellProcess],
) -> None:
    port = _free_port()  # nothing listens: a command that asked the server would say so
    out = shells(port).finish(
        "",
        "SEND maria",
        "REGISTER juan 01/02/2000 password",
        "REGISTER juan 31/02/2000 password Juan",
        "LOGIN juan",  # not on a terminal: the password is not asked for
        "LOGIN juan a b",
        "LOGOUT now",
        "READ all",
        "HISTORY",
        "HISTORY maria 0",
        "HISTORY maria 501",
        "HISTORY maria ten",
        "CONNECTEDUSERS now",
        "QUIT now",
        "CONNECT juan",
        f"REGISTER juan 01/02/2000 {PW} Juan",
        "QUIT",
        "HELP",
    )
    usage = {
        "SEND": "c> usage: SEND <alias> <message...>",
        "REGISTER": "c> usage: REGISTER <alias> <DD/MM/YYYY> <password> <full name...>",
        "LOGIN": "c> usage: LOGIN <alias> <password>",
        "HISTORY": "c> usage: HISTORY <alias> [<n>]",
    }
    assert out == [
        usage["SEND"],
        usage["REGISTER"],
        usage["REGISTER"],
        usage["LOGIN"],
        usage["LOGIN"],
        "c> usage: LOGOUT",
        "c> usage: READ",
        usage["HISTORY"],
        usage["HISTORY"],
        usage["HISTORY"],
        usage["HISTORY"],
        "c> usage: CONNECTEDUSERS",
        "c> usage: QUIT",
        "c> unknown command 'CONNECT'; commands: REGISTER, LOGIN, LOGOUT, SEND, READ, CONNECTEDUSERS,"
        " HISTORY, HELP, QUIT (HELP explains)",
        f"c> REGISTER FAIL: server unreachable (127.0.0.1:{port}: Connection refused)",
    ]


def test_a_classic_user_and_a_session_user_talk(
    server: ServerProcess,
    shells: Callable[[int], ShellProcess],
    classic: Callable[[int], ShellProcess],
) -> None:
    maria = shells(server.session_port)
    maria.send(f"REGISTER maria 01/02/2000 {PW} Maria", f"LOGIN maria {PW}")
    maria.expect("c> LOGIN OK")
    pepe = classic(server.port)
    pepe.send("REGISTER pepe 01/02/2000 Pepe", "CONNECT pepe")
    pepe.expect("c> CONNECT OK")
    maria.expect("c> ONLINE pepe")

    pepe.send("SEND maria hola maria")
    pepe.expect("c> SEND OK - MESSAGE 1")
    maria.expect("c> MESSAGE 1 FROM pepe: hola maria")
    pepe.expect("c> SEND MESSAGE 1 OK")  # once maria's client acknowledged it

    maria.send("SEND pepe hola pepe")
    maria.expect("c> SEND OK - MESSAGE 1")
    pepe.expect("c> MESSAGE 1 FROM maria: hola pepe")
    maria.expect("c> SEND MESSAGE 1 DELIVERED TO pepe")
    pepe.finish("QUIT")
    maria.expect("c> OFFLINE pepe")
    maria.finish()


async def test_a_dropped_connection_is_reported_and_resumed(server: ServerProcess) -> None:
    out: list[str] = []
    shell = SessionShell(HOST, server.session_port, NO_WS, out=out.append)
    try:
        for line in (f"REGISTER juan 01/02/2000 {PW} Juan", f"LOGIN juan {PW}"):
            assert await shell.execute(line)
        assert shell.client is not None
        assert shell.client._link is not None
        shell.client._link.abort()  # the network fails
        await shell.execute("SEND juan still here")  # waits for the session to come back
        await shell.drain_pushes()
    finally:
        await shell.close()
    assert [line for line in out if NOTE not in line] == [
        "c> REGISTER OK",
        "c> LOGIN OK",
        "c> connection lost (connection closed by the server); reconnecting",
        "c> reconnected",
        "c> SEND OK - MESSAGE 1",
        "c> MESSAGE 1 FROM juan: still here",
        "c> SEND MESSAGE 1 DELIVERED TO juan",
        "c> LOGOUT OK",
    ]
    shell._on_event(Disconnected("server gone", reconnecting=False))
    assert out[-1] == "c> DISCONNECTED: server gone"


# --- under a pseudo-terminal -----------------------------------------------------------------------


class SessionTerminal(Terminal):
    """A `dmds client --session` on a pseudo-terminal (see Terminal)."""

    def __init__(self, port: int, home: Path) -> None:  # not super(): it starts a classic one
        import pty

        self.master, slave = pty.openpty()
        env = {**os.environ, "HOME": str(home), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
        args = [
            sys.executable, "-m", "dmds.cli.main", "client", "--session",
            "-s", HOST, "-p", str(port), "--ws", NO_WS,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.raw = b""


@pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin")), reason="needs a POSIX pseudo-terminal")
def test_passwords_asked_on_a_terminal_are_not_shown_nor_kept(server: ServerProcess, tmp_path: Path) -> None:
    terminal = SessionTerminal(server.session_port, tmp_path)
    secret = "do-not-show-me"
    try:
        terminal.expect("HELP lists the commands")
        terminal.type("REGISTER juan 01/02/2000\r")
        terminal.expect("password:")
        terminal.type(f"{secret}\r")
        terminal.expect("password again:")
        terminal.type(f"{secret}\r")
        terminal.expect("full name:")
        terminal.type("Juan Perez\r")
        terminal.expect("c> REGISTER OK")
        mark = terminal.mark()
        terminal.type("LOGIN juan\r")
        terminal.expect("password:", since=mark)
        terminal.type(f"{secret}\r")
        terminal.expect("c> LOGIN OK")
        assert secret not in terminal._text(0)  # never echoed
        terminal.type(f"LOGIN juan {secret}\r")  # typed on the command line: shown, but not kept
        terminal.expect("c> LOGIN FAIL: already logged in as juan; LOGOUT first")
        terminal.type("QUIT\r")
        terminal.expect("c> LOGOUT OK")
        assert terminal.wait() == 0
    finally:
        terminal.close()
    history = (tmp_path / ".dmds_history").read_text()
    assert "+REGISTER juan 01/02/2000\n" in history
    assert "+LOGIN juan\n" in history
    assert secret not in history
