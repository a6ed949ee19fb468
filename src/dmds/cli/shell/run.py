"""Running a shell until QUIT or the end of input (`dmds client`).

On a terminal the shell reads with prompt_toolkit (history in ``~/.dmds_history``, completion of
commands and of the aliases seen so far, pushes printed above the line being typed, passwords asked
without echo). Otherwise it reads commands line by line from stdin, which is how scripts and tests
drive it: at QUIT or the end of input it waits briefly for pushes still arriving, then leaves cleanly
(DISCONNECT, or LOGOUT in session mode).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import threading
from collections.abc import AsyncIterator
from typing import Final

from prompt_toolkit import PromptSession
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from dmds.cli.shell.base import PREFIX
from dmds.cli.shell.classic import ALIAS_COMMANDS, USAGE, ClassicShell
from dmds.cli.shell.completion import ShellCompleter
from dmds.cli.shell.history import (
    NoHistory,
    RedactingFileHistory,
    RedactingMemoryHistory,
    TolerantFileHistory,
    history_path,
)
from dmds.cli.shell.session import SESSION_ALIAS_COMMANDS, SESSION_USAGE, SessionShell

__all__ = ["run_client", "run_session_client"]

_READ_AHEAD: Final = 4


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


async def _run_script(shell: ClassicShell | SessionShell) -> None:
    try:
        async for line in _stdin_lines():
            if not await shell.execute(line):
                break
        await shell.drain_pushes()
    finally:
        await shell.close()


async def _run_interactive(shell: ClassicShell | SessionShell) -> None:
    path = history_path()
    prompt: PromptSession[str]
    history: History
    if isinstance(shell, SessionShell):
        history = RedactingMemoryHistory() if path is None else RedactingFileHistory(path)
        completer = ShellCompleter(shell.known_aliases, SESSION_USAGE, SESSION_ALIAS_COMMANDS)
        prompt = PromptSession(history=history, completer=completer)
        secret: PromptSession[str] = PromptSession(history=NoHistory())

        async def ask(question: str, hidden: bool) -> str:
            return await secret.prompt_async(question, is_password=hidden)

        shell.ask = ask
        where = f"dmds client (session protocol): server {shell.host}:{shell.port}"
    else:
        history = InMemoryHistory() if path is None else TolerantFileHistory(path)
        completer = ShellCompleter(shell.known_aliases, USAGE, ALIAS_COMMANDS)
        prompt = PromptSession(history=history, completer=completer)
        where = f"dmds client: server {shell.client.host}:{shell.client.port}"
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
    return _run(ClassicShell(server, port, ws_url, listen_host=listen_host))


def run_session_client(
    server: str, port: int, ws_url: str, *, ssl_context: ssl.SSLContext | None = None
) -> int:
    """Run the shell against the session server at (server, port) until QUIT or end of input."""
    return _run(SessionShell(server, port, ws_url, ssl_context=ssl_context))


def _run(shell: ClassicShell | SessionShell) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        asyncio.run(_run_interactive(shell) if interactive else _run_script(shell))
    except KeyboardInterrupt:  # Ctrl-C while a command ran (or, from a script, at any time)
        return 130
    return 0
