"""The command-line client (`dmds client`): real subprocesses driven through stdin pipes (and one
through a pseudo-terminal) against a real `dmds serve`, plus in-process checks of the `ClassicShell`."""

from __future__ import annotations

import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmds.cli.shell import ClassicShell
from dmds.cli.shell.history import TolerantFileHistory
from dmds.soap.normaliser import NormaliserUnavailable
from dmds.soap.service import SoapServer
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"
NO_WS = "http://127.0.0.1:1/?wsdl"  # nothing listens on port 1: the normaliser is unavailable
WAIT_S = 10.0
NOTE = "normaliser unavailable"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class ShellProcess:
    """A `dmds client` subprocess: commands written to its stdin, its stdout lines read by a thread."""

    def __init__(self, port: int, ws_url: str = NO_WS, env: dict[str, str] | None = None) -> None:
        args = [
            sys.executable, "-m", "dmds.cli.main", "client",
            "-s", HOST, "-p", str(port), "--ws", ws_url, "--listen-host", HOST,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._read = 0  # lines of self.lines already matched or skipped by expect()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, expected: str, timeout_s: float = WAIT_S) -> str:
        """Wait for a stdout line equal to `expected` (after the lines already matched)."""
        return self._expect(lambda line: line == expected, repr(expected), timeout_s)

    def expect_prefix(self, prefix: str, timeout_s: float = WAIT_S) -> str:
        """Wait for a stdout line starting with `prefix` (after the lines already matched)."""
        return self._expect(lambda line: line.startswith(prefix), f"{prefix!r}...", timeout_s)

    def _expect(self, matches: Callable[[str], bool], what: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            while self._read < len(self.lines):
                line = self.lines[self._read]
                self._read += 1
                if matches(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {what} within {timeout_s} s; got {self.lines}")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(f"stdout ended before {what}; got {self.lines}; {self._stderr()}")
            self.lines.append(item)

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return f"stderr: {self.proc.stderr.read()}"

    def finish(self, *lines: str, timeout_s: float = WAIT_S) -> list[str]:
        """Write `lines`, close stdin, wait for the exit (status 0) and return all of stdout."""
        self.send(*lines)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.lines.append(item)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        assert self.proc.returncode == 0, (self.lines, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def shells() -> Iterator[Callable[..., ShellProcess]]:
    started: list[ShellProcess] = []

    def make(port: int, ws_url: str = NO_WS, env: dict[str, str] | None = None) -> ShellProcess:
        shell = ShellProcess(port, ws_url, env)
        started.append(shell)
        return shell

    yield make
    for shell in started:
        shell.kill()


def _messages(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("c> MESSAGE ")]


def test_two_clients_exchange_messages(server: ServerProcess, shells: Callable[..., ShellProcess]) -> None:
    juan, maria = shells(server.port), shells(server.port)
    juan.send("REGISTER juan123 01/02/2000 Juan Perez", "CONNECT juan123")
    juan.expect("c> REGISTER OK")
    juan.expect("c> CONNECT OK")
    maria.send("register maria 03/04/1999 María   López", "Connect maria")
    maria.expect("c> REGISTER OK")
    maria.expect("c> CONNECT OK")

    juan.send("SEND maria Hola soy Juan")
    juan.expect("c> SEND OK - MESSAGE 1")
    maria.expect("c> MESSAGE 1 FROM juan123: Hola soy Juan")
    juan.expect("c> SEND MESSAGE 1 OK")

    maria.send("SEND juan123 hola, ¿qué tal?")
    maria.expect("c> SEND OK - MESSAGE 1")
    juan.expect("c> MESSAGE 1 FROM maria: hola, ¿qué tal?")
    maria.expect("c> SEND MESSAGE 1 OK")

    juan.send("send maria otra")
    juan.expect("c> SEND OK - MESSAGE 2")
    maria.expect("c> MESSAGE 2 FROM juan123: otra")
    juan.expect("c> SEND MESSAGE 2 OK")

    juan_out = juan.finish("QUIT")
    maria_out = maria.finish()  # end of input: as QUIT
    for out in (juan_out, maria_out):
        assert out[-1] == "c> DISCONNECT OK"  # a clean disconnect before leaving
        assert sum(NOTE in line for line in out) == 1, out  # the note once, not at every SEND


def test_connected_users(server: ServerProcess, shells: Callable[..., ShellProcess]) -> None:
    juan, maria = shells(server.port), shells(server.port)
    juan.send("REGISTER juan 01/02/2000 Juan", "REGISTER maria 01/02/2000 Maria", "CONNECT juan")
    juan.expect("c> CONNECT OK")
    maria.send("CONNECT maria")
    maria.expect("c> CONNECT OK")
    maria.send("CONNECTEDUSERS")
    line = maria.expect_prefix("c> CONNECTED USERS (2 users connected) OK - ")
    assert sorted(line.rsplit(" - ", 1)[1].split(", ")) == ["juan", "maria"]
    juan.finish("DISCONNECT", "QUIT")
    maria.send("CONNECTEDUSERS")
    maria.expect("c> CONNECTED USERS (1 users connected) OK - maria")
    maria.finish("QUIT")


def test_offline_recipient_gets_stored_messages_in_order(
    server: ServerProcess, shells: Callable[..., ShellProcess]
) -> None:
    juan = shells(server.port)
    juan.send("REGISTER maria 01/02/2000 Maria Lopez", "REGISTER juan 01/02/2000 Juan Perez", "CONNECT juan")
    juan.expect("c> CONNECT OK")
    texts = [f"mensaje numero {n}" for n in range(1, 6)]
    juan.send(*(f"SEND maria {text}" for text in texts))
    for n in range(1, 6):
        juan.expect(f"c> SEND OK - MESSAGE {n}")
    juan_out = juan.finish("QUIT")
    assert not [line for line in juan_out if line.startswith("c> SEND MESSAGE")]  # stored, not delivered

    maria_out = shells(server.port).finish("CONNECT maria")  # then end of input: pushes are awaited
    assert _messages(maria_out) == [f"c> MESSAGE {n} FROM juan: {t}" for n, t in enumerate(texts, start=1)]
    assert maria_out[-1] == "c> DISCONNECT OK"

    # dmds (not the original server) sends the receipts of stored messages, on juan's next CONNECT.
    juan_again = shells(server.port).finish("CONNECT juan")
    receipts = [line for line in juan_again if line.startswith("c> SEND MESSAGE")]
    assert receipts == [f"c> SEND MESSAGE {n} OK" for n in range(1, 6)]


def test_bad_commands_print_usage_and_nothing_asks_the_server(shells: Callable[..., ShellProcess]) -> None:
    # Nothing listens on this port: a command that asked the server would print "server unreachable".
    port = _free_port()
    out = shells(port).finish(
        "",
        "   ",
        "SEND",
        "SEND maria",
        "SEND maria    ",
        "REGISTER juan",
        "REGISTER juan 01/02/2000",
        "REGISTER juan 1/2/2000 Juan",
        "REGISTER juan 31/02/2000 Juan",
        "UNREGISTER",
        "UNREGISTER a b",
        "CONNECT",
        "CONNECT a b",
        "DISCONNECT a b",
        "CONNECTEDUSERS now",
        "HELP me",
        "QUIT now",
        "FROBNICATE the thing",
        "SEND maria hola",
        "CONNECTEDUSERS",
        "DISCONNECT",
        "HELP",
        "QUIT",
        "REGISTER after quit 01/01/2000 Nobody",
    )
    assert out[:20] == [
        "c> usage: SEND <alias> <message...>",
        "c> usage: SEND <alias> <message...>",
        "c> usage: SEND <alias> <message...>",
        "c> usage: REGISTER <alias> <DD/MM/YYYY> <full name...>",
        "c> usage: REGISTER <alias> <DD/MM/YYYY> <full name...>",
        "c> usage: REGISTER <alias> <DD/MM/YYYY> <full name...>",
        "c> usage: REGISTER <alias> <DD/MM/YYYY> <full name...>",
        "c> usage: UNREGISTER <alias>",
        "c> usage: UNREGISTER <alias>",
        "c> usage: CONNECT <alias>",
        "c> usage: CONNECT <alias>",
        "c> usage: DISCONNECT [<alias>]",
        "c> usage: CONNECTEDUSERS",
        "c> usage: HELP",
        "c> usage: QUIT",
        "c> unknown command 'FROBNICATE'; commands: REGISTER, UNREGISTER, CONNECT, DISCONNECT, SEND, "
        "CONNECTEDUSERS, HELP, QUIT (HELP explains)",
        "c> SEND FAIL: not connected (CONNECT <alias> first)",
        "c> CONNECTED USERS FAIL: not connected (CONNECT <alias> first)",
        "c> DISCONNECT FAIL: not connected",
        "c> commands (the command word may be in any case):",
    ]
    assert len(out) == 20 + 8  # HELP's eight command lines; nothing after QUIT
    assert all(line.startswith("   ") for line in out[20:])


def test_server_unreachable(shells: Callable[..., ShellProcess]) -> None:
    port = _free_port()
    out = shells(port).finish("REGISTER juan 01/02/2000 Juan", "CONNECT juan", "UNREGISTER juan")
    reason = f"server unreachable (127.0.0.1:{port}: Connection refused)"
    assert out == [
        f"c> REGISTER FAIL: {reason}",
        f"c> CONNECT FAIL: {reason}",
        f"c> UNREGISTER FAIL: {reason}",
    ]


def test_error_codes_in_words(server: ServerProcess, shells: Callable[..., ShellProcess]) -> None:
    other = shells(server.port)
    other.send("REGISTER juan 01/02/2000 Juan", "CONNECT juan")
    other.expect("c> CONNECT OK")
    out = shells(server.port).finish(
        "REGISTER juan 01/02/2000 Juan Again",
        "UNREGISTER nobody",
        "CONNECT nobody",
        "CONNECT juan",  # connected in the other client
        "REGISTER maria 01/02/2000 Maria",
        "CONNECT maria",
        "CONNECT juan",
        "SEND nobody hola",
        "DISCONNECT nobody",
        "DISCONNECT juan",  # another alias than ours: asked of the server
        "DISCONNECT juan",
        "UNREGISTER maria",  # ours: the connection ends with it
        "CONNECTEDUSERS",
    )
    assert [line for line in out if NOTE not in line] == [
        "c> REGISTER FAIL: alias already taken",
        "c> UNREGISTER FAIL: no such user",
        "c> CONNECT FAIL: no such user",
        "c> CONNECT FAIL: user already connected",
        "c> REGISTER OK",
        "c> CONNECT OK",
        "c> CONNECT FAIL: already connected as maria; DISCONNECT first",
        "c> SEND FAIL: sender or recipient does not exist",
        "c> DISCONNECT FAIL: no such user",
        "c> DISCONNECT OK",
        "c> DISCONNECT FAIL: user not connected",
        "c> UNREGISTER OK",
        "c> CONNECTED USERS FAIL: not connected (CONNECT <alias> first)",
    ]
    other.finish()


def test_soap_normaliser_cleans_the_text(
    server: ServerProcess, soap: SoapServer, shells: Callable[..., ShellProcess]
) -> None:
    juan, maria = shells(server.port, soap.wsdl_url), shells(server.port, soap.wsdl_url)
    juan.send("REGISTER juan 01/02/2000 Juan", "REGISTER maria 01/02/2000 Maria", "CONNECT juan")
    juan.expect("c> CONNECT OK")
    maria.send("CONNECT maria")
    maria.expect("c> CONNECT OK")
    juan.send("SEND maria   hola    mundo ", "SEND maria \tdos\t\tpalabras")
    maria.expect("c> MESSAGE 1 FROM juan: hola mundo")
    maria.expect("c> MESSAGE 2 FROM juan: dos palabras")
    juan.expect("c> SEND MESSAGE 2 OK")
    for out in (juan.finish(), maria.finish()):
        assert not [line for line in out if NOTE in line]


def test_without_normaliser_the_text_goes_as_typed(
    server: ServerProcess, shells: Callable[..., ShellProcess]
) -> None:
    juan, maria = shells(server.port), shells(server.port)
    juan.send("REGISTER juan 01/02/2000 Juan", "REGISTER maria 01/02/2000 Maria", "CONNECT juan")
    juan.expect("c> CONNECT OK")
    maria.send("CONNECT maria")
    maria.expect("c> CONNECT OK")
    juan.send("SEND maria   hola    mundo ")
    maria.expect("c> MESSAGE 1 FROM juan:   hola    mundo ")
    juan_out = juan.finish()
    note = [line for line in juan_out if NOTE in line]
    assert len(note) == 1
    assert note[0].startswith(f"c> {NOTE} (")
    assert note[0].endswith("); sending text as typed")
    maria.finish()


# --- in process ------------------------------------------------------------------------------------


class FlakyNormaliser:
    """Fails while `down`, else upper-cases: enough to tell normalised from raw text."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def anormalise(self, text: str) -> str:
        self.calls += 1
        if self.down:
            raise NormaliserUnavailable("test says no")
        return text.strip().upper()


async def test_normaliser_note_once_until_it_works_again(server: ServerProcess) -> None:
    out: list[str] = []
    normaliser = FlakyNormaliser()
    shell = ClassicShell(HOST, server.port, NO_WS, listen_host=HOST, out=out.append, normaliser=normaliser)
    try:
        for line in ("REGISTER juan 01/02/2000 Juan", "CONNECT juan"):
            assert await shell.execute(line)
        for text in ("uno", "dos"):
            await shell.execute(f"SEND juan {text}")
        normaliser.down = False
        await shell.execute("SEND juan tres")
        normaliser.down = True
        await shell.execute("SEND juan cuatro")
        await shell.execute("SEND juan cinco")
        assert normaliser.calls == 5  # tried at every SEND
        assert not await shell.execute("quit")
        await shell.drain_pushes()
    finally:
        await shell.close()
    sent = [line for line in out if "SEND OK" in line or NOTE in line]
    assert sent == [
        f"c> {NOTE} (test says no); sending text as typed",
        "c> SEND OK - MESSAGE 1",
        "c> SEND OK - MESSAGE 2",
        "c> SEND OK - MESSAGE 3",
        f"c> {NOTE} (test says no); sending text as typed",
        "c> SEND OK - MESSAGE 4",
        "c> SEND OK - MESSAGE 5",
    ]
    # Messages to oneself: each arrives, raw while the normaliser was down.
    assert _messages(out) == [
        "c> MESSAGE 1 FROM juan: uno",
        "c> MESSAGE 2 FROM juan: dos",
        "c> MESSAGE 3 FROM juan: TRES",
        "c> MESSAGE 4 FROM juan: cuatro",
        "c> MESSAGE 5 FROM juan: cinco",
    ]
    assert out[-1] == "c> DISCONNECT OK"
    assert shell.known_aliases() == ["juan"]


async def test_control_characters_from_the_network_are_escaped(server: ServerProcess) -> None:
    out: list[str] = []
    shell = ClassicShell(
        HOST, server.port, NO_WS, listen_host=HOST, out=out.append, normaliser=FlakyNormaliser()
    )
    try:
        for line in ("REGISTER juan 01/02/2000 Juan", "CONNECT juan", "SEND juan a\x1b[2Jb\tc"):
            await shell.execute(line)
        await shell.drain_pushes()
    finally:
        await shell.close()
    assert "c> MESSAGE 1 FROM juan: a\\x1b[2Jb\tc" in out


# --- under a pseudo-terminal -----------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\r\x08]")


class Terminal:
    """A `dmds client` on a pseudo-terminal; answers prompt_toolkit's cursor-position queries."""

    def __init__(self, port: int, home: Path) -> None:
        import pty

        self.master, slave = pty.openpty()
        env = {**os.environ, "HOME": str(home), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
        args = [
            sys.executable, "-m", "dmds.cli.main", "client",
            "-s", HOST, "-p", str(port), "--ws", NO_WS, "--listen-host", HOST,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.raw = b""

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        if b"\x1b[6n" in data:
            os.write(self.master, b"\x1b[1;1R")
        self.raw += data
        return True

    def mark(self) -> int:
        """A position in the output, for `expect(..., since=mark)`."""
        return len(self.raw)

    def expect(self, expected: str, timeout_s: float = WAIT_S, since: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while expected not in self._text(since):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.1)):
                raise AssertionError(f"{expected!r} not shown; screen so far: {self._text(0)!r}")

    def _text(self, since: int) -> str:
        return _ANSI.sub("", self.raw[since:].decode("utf-8", errors="replace"))

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout_s: float = WAIT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)


@pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin")), reason="needs a POSIX pseudo-terminal")
def test_interactive_under_a_terminal(
    server: ServerProcess, shells: Callable[..., ShellProcess], tmp_path: Path
) -> None:
    terminal = Terminal(server.port, tmp_path)
    try:
        terminal.expect("HELP lists the commands")
        terminal.type("REGISTER juan 01/02/2000 Juan\r")
        terminal.expect("c> REGISTER OK")
        mark = terminal.mark()
        terminal.type("conn\t")  # ambiguous: the menu offers both commands
        terminal.expect("CONNECTEDUSERS", since=mark)
        terminal.type("\x15")  # Ctrl-U: clear the line
        terminal.type("CONNECT ju")
        terminal.expect("CONNECT ju", since=mark)
        mark = terminal.mark()
        terminal.type("\t")  # aliases seen so far complete too
        terminal.expect("an", since=mark)
        terminal.type("\r")
        terminal.expect("c> CONNECT OK")
        maria = shells(server.port)
        maria.send("REGISTER maria 01/02/2000 Maria", "CONNECT maria", "SEND juan hola desde fuera")
        maria.expect("c> SEND OK - MESSAGE 1")
        terminal.expect("c> MESSAGE 1 FROM maria: hola desde fuera")  # printed while the prompt waits
        terminal.type("CONNECTEDUSERS\r")
        terminal.expect("users connected) OK - ")
        terminal.type("\x04")  # Ctrl-D: as QUIT, with a clean disconnect
        terminal.expect("c> DISCONNECT OK")
        assert terminal.wait() == 0
        maria.finish()
    finally:
        terminal.close()
    history = (tmp_path / ".dmds_history").read_text()
    assert "+CONNECT juan" in history
    assert "+REGISTER juan 01/02/2000 Juan" in history


def test_history_file_that_cannot_be_written_is_tolerated(tmp_path: Path) -> None:
    history = TolerantFileHistory(tmp_path / "missing" / ".dmds_history")
    history.store_string("HELP")  # the directory does not exist: kept in memory only
    assert list(history.load_history_strings()) == []
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    assert list(TolerantFileHistory(unreadable).load_history_strings()) == []
