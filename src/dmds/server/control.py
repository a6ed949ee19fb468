"""The control socket: how `dmds backup` asks the running server that owns a data dir for a backup.

The SQLite store's lock keeps every other process out of the database (see
`dmds.stores.sqlite.backup`), so the server makes the copy itself. It listens on a Unix socket in
its data dir, `control.sock`, mode 0600: only the user the server runs as (and root) can connect,
which is the whole of its authentication, as with a database's local socket. A client writes one
JSON request line, e.g. ``{"op": "backup", "dest": "/abs/path", "force": false}``; the server answers
with JSON lines: ``{"progress": {...}}`` about once a second while it works (so that a client can
tell a long backup from a hung server), and a last line with ``"ok"``: true and a report, or false
and an error. A client that goes away cancels its backup. The admin port (issue 13) will call the
same `SqliteStore.backup`; this socket is what works without it, and what `dmds backup` tries first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmds.errors import StoreError
from dmds.stores.sqlite import SqliteStore

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
#: A request is a path (PATH_MAX is 4096 bytes on Linux) and a flag, as JSON.
MAX_REQUEST_BYTES = 16384
#: Seconds between two progress lines to a client.
PROGRESS_EVERY_S = 1.0
#: sun_path holds 108 bytes with its NUL: a longer socket path cannot be bound.
MAX_SOCKET_PATH = 107


class ControlServer:
    """Serves `control.sock` in the data dir for the server's lifetime."""

    def __init__(self, data_dir: Path, store: SqliteStore, timeout_s: float) -> None:
        self._path = data_dir / SOCKET_NAME
        self._store = store
        self._timeout_s = timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._inode = 0
        self._backups: set[asyncio.Future[Any]] = set()

    async def start(self) -> Path | None:
        """Listen; the path, or None (logged) if this data dir's path is too long for a socket."""
        path = self._path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            log.warning("no control socket: %s is longer than a Unix socket path may be; dmds backup "
                        "cannot reach this server (use a shorter --data-dir)", path)  # fmt: skip
            return None
        # The store opened, so this process owns the data dir: a socket left here is a dead server's.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            # Before listen(): until then a connection is refused, so none gets in with the mode
            # the umask gave.
            os.chmod(path, 0o600)
            self._inode = path.stat().st_ino
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST_BYTES)
        except BaseException:
            sock.close()
            raise
        log.info("control socket at %s (dmds backup)", path)
        return path

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for backup in list(self._backups):  # the server is stopping: no backup outlives it
            backup.cancel()
        with contextlib.suppress(OSError):
            if self._path.stat().st_ino == self._inode:  # not a newer server's
                self._path.unlink()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    line = await reader.readline()
            except TimeoutError:
                _answer(writer, {"ok": False, "error": f"no request within {self._timeout_s:g} s"})
                return
            except ValueError:  # over the StreamReader's limit
                _answer(writer, {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"})
                return
            if not line.strip():
                return  # a probe (is a server there?), or a client gone at once
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                _answer(writer, {"ok": False, "error": f"bad request: {exc}"})
                return
            op = request.get("op")
            if op == "backup":
                await self._backup(request, reader, writer)
            else:
                _answer(writer, {"ok": False, "error": f"unknown op {op!r} (known: backup)"})
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _backup(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        dest, force = request.get("dest"), request.get("force", False)
        if not isinstance(dest, str) or not os.path.isabs(dest) or not isinstance(force, bool):
            _answer(
                writer, {"ok": False, "error": "backup needs an absolute path 'dest' and a boolean 'force'"}
            )
            return
        log.info("backup to %s requested on the control socket%s", dest, " (force)" if force else "")
        state: dict[str, Any] = {"phase": "copying", "remaining": None, "total": None}

        def progress(remaining: int, total: int) -> None:
            state.update(remaining=remaining, total=total)

        backup = asyncio.ensure_future(self._store.backup(Path(dest), force=force, progress=progress))
        self._backups.add(backup)
        backup.add_done_callback(self._backups.discard)
        gone = asyncio.ensure_future(_until_eof(reader))  # the client sends nothing more: EOF, it left
        last = time.monotonic()
        try:
            while not backup.done():
                await asyncio.wait(
                    (backup, gone), timeout=PROGRESS_EVERY_S, return_when=asyncio.FIRST_COMPLETED
                )
                if gone.done() and not backup.done():
                    log.warning("backup to %s cancelled: the client went away", dest)
                    backup.cancel()
                    with contextlib.suppress(BaseException):
                        await backup
                    return
                if not backup.done() and time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    _answer(writer, {"progress": state})
        finally:
            gone.cancel()
        try:
            report = backup.result()
        except StoreError as exc:
            log.warning("backup to %s failed: %s", dest, exc)
            _answer(writer, {"ok": False, "error": str(exc)})
        else:
            log.info("backup written: %s", report.line())
            _answer(writer, {"ok": True, "report": report.as_dict()})
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass  # whatever else a client sends is not a request: one per connection


def _answer(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")


# -- the client side (dmds backup, dmds restore): blocking, one request per connection ---------------------


class ControlUnavailable(Exception):
    """No server listens on the data dir's control socket (none runs, or it died and left the file)."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def _connect(data_dir: Path, timeout_s: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(os.fspath(socket_path(data_dir)))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise ControlUnavailable(str(exc)) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def server_answers(data_dir: Path, timeout_s: float = 5.0) -> bool:
    """Whether a server listens on the data dir's control socket."""
    try:
        _connect(data_dir, timeout_s).close()
    except ControlUnavailable:
        return False
    return True


def call(
    data_dir: Path,
    request: dict[str, Any],
    *,
    timeout_s: float,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send `request`, and return the server's last answer line. `timeout_s` bounds the wait for
    each line: the server sends progress about once a second. Raises ControlUnavailable, OSError
    (TimeoutError included), or ConnectionError if the server hangs up without an answer."""
    with _connect(data_dir, timeout_s) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as lines:
            for line in lines:
                answer = json.loads(line)
                if "progress" in answer:
                    if on_progress is not None:
                        on_progress(answer["progress"])
                    continue
                if not isinstance(answer, dict):
                    break
                return answer
    raise ConnectionError("the server closed the control connection without an answer")
