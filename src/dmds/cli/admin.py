"""`dmds admin`: the admin commands, over a running server's admin port or on its stopped store.

Each command is one HTTP request to the admin port (`--admin-url`, the bearer token read from the
data dir's admin-token file or `--token-file`). When nothing listens there (connection refused),
the commands that make sense without a server (summary, users, user, delete, block, unblock,
blocked) open the store directly, as `dmds serve` would (`--data-dir` for SQLite, `--store` for
PostgreSQL), run the same code the server runs and say so; disconnect, set and settings need the
running server and say that. Output is text, or with `--json` the admin port's JSON.
Exit codes: 0 done, 1 failed (refused, unknown user, unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmds.errors import DmdsError, InvalidField, StoreError, UnknownUser

#: Seconds an admin request may take by default (a delete of a large mailbox is one transaction).
REQUEST_TIMEOUT_S = 30.0
DEFAULT_URL = "http://127.0.0.1:7003"
#: Commands that can run on the store of a stopped server.
OFFLINE = frozenset({"summary", "users", "user", "delete", "block", "unblock", "blocked"})


class Failed(Exception):
    """The command failed: said on stderr, exit 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class NotRunning(Exception):
    """Nothing listens at the admin URL."""


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any] | None = None


def _quote(alias: str) -> str:
    return urllib.parse.quote(alias, safe="")


def request_for(args: argparse.Namespace) -> Request:
    """The admin port's request for a command."""
    command = args.admin_command
    if command == "summary":
        return Request("GET", "/admin/summary")
    if command == "users":
        query = urllib.parse.urlencode({"prefix": args.prefix, "after": args.after, "limit": args.limit})
        return Request("GET", f"/admin/users?{query}")
    if command == "user":
        return Request("GET", f"/admin/users/{_quote(args.alias)}")
    if command == "delete":
        return Request("DELETE", f"/admin/users/{_quote(args.alias)}")
    if command == "disconnect":
        return Request("DELETE", f"/admin/connections/{_quote(args.alias)}")
    if command == "block":
        return Request("POST", f"/admin/blocked/{_quote(args.alias)}")
    if command == "unblock":
        return Request("DELETE", f"/admin/blocked/{_quote(args.alias)}")
    if command == "blocked":
        return Request("GET", f"/admin/blocked?{urllib.parse.urlencode({'prefix': args.prefix})}")
    if command == "settings":
        return Request("GET", "/admin/settings")
    assert command == "set"
    return Request("POST", f"/admin/settings/{_quote(args.name)}", {"value": _value(args.value)})


def _value(text: str) -> Any:
    """A number if it is one (rates, bursts), else the text (a log level)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _token(args: argparse.Namespace) -> str | None:
    path = args.token_file or args.data_dir / "admin-token"
    try:
        return Path(path).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def call(args: argparse.Namespace, req: Request) -> Any:
    """Send `req` to the admin port; its JSON answer. Raises NotRunning or Failed."""
    url = args.admin_url.rstrip("/") + req.path
    data = None if req.body is None else json.dumps(req.body).encode()
    if not url.startswith(("http://", "https://")):
        raise Failed(f"--admin-url must be http:// or https://, not {args.admin_url!r}", 2)
    http = urllib.request.Request(url, data=data, method=req.method)  # noqa: S310 - http(s) only
    if data is not None:
        http.add_header("Content-Type", "application/json")
    token = _token(args)
    if token is not None:
        http.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(http, timeout=args.timeout_s) as answer:  # noqa: S310 - our URL
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            error = exc.reason
        if exc.code in (401, 403):
            where = args.token_file or args.data_dir / "admin-token"
            hint = "no token found" if token is None else "the token was refused"
            raise Failed(f"the admin port said {exc.code}: {error} ({hint}; token file {where})") from None
        raise Failed(str(error), 2 if exc.code == 400 else 1) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise NotRunning from None
        raise Failed(f"cannot reach the admin port at {args.admin_url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise Failed(f"cannot reach the admin port at {args.admin_url}: {exc or 'timeout'}") from None


# -- on a stopped server's store ---------------------------------------------------------------------------


async def offline(args: argparse.Namespace) -> Any:
    """The command on the store opened directly, through the code the server runs. Its modules are
    imported here: `dmds --help` stays quick."""
    from dmds.admin import actions  # noqa: PLC0415 - only when offline
    from dmds.core.operator import Operator  # noqa: PLC0415 - only when offline
    from dmds.core.service import Service  # noqa: PLC0415 - only when offline
    from dmds.settings import AccountSettings, DeliverySettings, StoreSettings  # noqa: PLC0415 - only when offline

    url = args.store or os.environ.get("DMDS_STORE", "")
    if url:
        from dmds.stores.postgresql import PostgresStore  # noqa: PLC0415 - only when offline

        store: Any = await PostgresStore.open(url, StoreSettings(), f"dmds-admin-{os.getpid()}")
    else:
        from dmds.stores.sqlite.store import DB_NAME, SqliteStore  # noqa: PLC0415 - only when offline

        if not (args.data_dir / DB_NAME).exists():
            raise Failed(f"no store at {args.data_dir / DB_NAME} (--data-dir, or --store for PostgreSQL)")
        try:
            store = await SqliteStore.open(args.data_dir, StoreSettings())
            await store.ping()  # the lock is taken at the first read: a server still on it fails here
        except StoreError as exc:
            raise Failed(
                f"cannot open the store ({exc}): is a server running on it without its admin port?"
            ) from None
    # No password is hashed here: the cheapest argon2 keeps the start quick.
    service = Service(store, DeliverySettings(), AccountSettings(argon2_time_cost=1, argon2_memory_kib=8))
    operator = Operator(service, store)
    who = f"admin {getpass.getuser()} (the store opened directly: the server is not running)"
    command = args.admin_command
    work: Callable[[], Awaitable[Any]]
    try:
        if command == "summary":
            work = lambda: _summary(store, bool(url))  # noqa: E731
        elif command == "users":
            work = lambda: actions.list_users(operator, args.prefix, args.after, args.limit)  # noqa: E731
        elif command == "user":
            work = lambda: actions.show_user(operator, args.alias)  # noqa: E731
        elif command == "delete":
            work = lambda: actions.delete_user(operator, args.alias, who)  # noqa: E731
        elif command == "block":
            work = lambda: actions.block_alias(operator, args.alias, who)  # noqa: E731
        elif command == "unblock":
            work = lambda: actions.unblock_alias(operator, args.alias, who)  # noqa: E731
        else:
            work = lambda: actions.list_blocked(store, args.prefix)  # noqa: E731
        return await work()
    except UnknownUser as exc:
        raise Failed(f"no such user: {exc}") from None
    except InvalidField as exc:
        raise Failed(str(exc), 2) from None
    except DmdsError as exc:
        raise Failed(str(exc) or type(exc).__name__) from None
    finally:
        await service.close()
        await store.close()


async def _summary(store: Any, shared: bool) -> dict[str, Any]:
    found = await store.summary()
    oldest = found.oldest_undelivered
    return {
        "users": found.users,
        # SQLite: nobody is online while the server is stopped; PostgreSQL: other nodes may serve.
        "online": None if shared else 0,
        "stored_messages": found.stored_messages,
        "stored_bytes": found.stored_bytes,
        "oldest_undelivered": oldest,
        "oldest_undelivered_age_s": None if oldest is None else max(0.0, time.time() - oldest),
        "store_bytes": found.size_bytes,
        "node": None,
    }


# -- text output ---------------------------------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{moment} ({max(0.0, time.time() - epoch):.0f} s ago)"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def _online(user: dict[str, Any]) -> str:
    if not user["online"]:
        return "no"
    return str(user["protocol"]) + (f" on {user['node']}" if user["node"] else "")


def text(command: str, found: Any) -> str:
    if command == "summary":
        online = "unknown (other nodes may serve)" if found["online"] is None else found["online"]
        return "\n".join(
            [
                f"users               {found['users']}",
                f"online              {online}",
                f"stored messages     {found['stored_messages']} ({found['stored_bytes']:,} bytes)",
                f"oldest undelivered  {_when(found['oldest_undelivered'])}",
                f"store size          {found['store_bytes']:,} bytes",
            ]
            + ([f"node                {found['node']}"] if found.get("node") else [])
        )
    if command == "users":
        rows = [
            [u["alias"], u["full_name"], u["registered_at"], _online(u), str(u["stored_messages"]),
             "yes" if u["blocked"] else ""]
            for u in found["users"]
        ]  # fmt: skip
        out = _table(rows, ["alias", "full name", "registered", "online", "waiting", "blocked"])
        more = f"\nmore: --after {found['next']}" if found["next"] else ""
        return (out if rows else "no users") + more
    if command == "user":
        u = found
        return "\n".join(
            [
                f"alias           {u['alias']}",
                f"full name       {u['full_name']}",
                f"registered at   {u['registered_at']}",
                f"protocol        {'session (password)' if u['protected'] else 'classic (no password)'}",
                f"online          {_online(u)}",
                f"waiting         {u['stored_messages']} message(s), {u['stored_bytes']:,} bytes",
                f"blocked         {'yes' if u['blocked'] else 'no'}",
            ]
        )
    if command == "delete":
        return f"deleted {found['deleted']} ({found['stored_messages']} message(s) waiting dropped)"
    if command == "disconnect":
        return f"disconnected {found['alias']}" if found["was_online"] else f"{found['alias']} was not online"
    if command == "block":
        what = "blocked" if found["newly"] else "was blocked already"
        extra = "" if found["registered"] else " (not registered: nobody can take it now)"
        return f"{found['alias']} {what}{extra}" + (", and disconnected" if found["was_online"] else "")
    if command == "unblock":
        return f"{found['alias']} {'unblocked' if found['unblocked'] else 'was not blocked'}"
    if command == "blocked":
        rows = [[b["alias"], _when(b["blocked_at"])] for b in found["blocked"]]
        return _table(rows, ["alias", "blocked at"]) if rows else "no blocked aliases"
    return "\n".join(f"{name:15} {value}" for name, value in dict(found).items())  # settings, set


def run(args: argparse.Namespace) -> int:
    command = args.admin_command
    if args.timeout_s <= 0:
        print(f"dmds admin {command}: --timeout-s must be > 0", file=sys.stderr)
        return 2
    if command == "delete" and not args.yes:
        if not sys.stdin.isatty():
            print("dmds admin delete: deleting needs --yes when not asked on a terminal", file=sys.stderr)
            return 2
        if input(f"delete {args.alias} and everything stored for it? [y/N] ").strip().lower() not in (
            "y",
            "yes",
        ):
            print("nothing deleted", file=sys.stderr)
            return 1
    try:
        try:
            found = call(args, request_for(args))
        except NotRunning:
            if command not in OFFLINE:
                raise Failed(
                    f"the server is not running (connection refused at {args.admin_url}): "
                    f"{command} needs the running server"
                ) from None
            print(
                f"the server is not running (nothing at {args.admin_url}): using the store directly",
                file=sys.stderr,
            )
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
            found = asyncio.run(offline(args))
    except Failed as exc:
        print(f"dmds admin {command}: {exc}", file=sys.stderr)
        return exc.code
    except StoreError as exc:
        print(f"dmds admin {command}: the store failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2) if args.json else text(command, found))
    return 0


def add_parser(sub: Any) -> None:
    admin = sub.add_parser(
        "admin",
        help="admin commands: users, disconnect, delete, block, live settings (server or store)",
        description="Talks to a running server's admin port; when it is not running, the commands that "
        "can open its store directly (SQLite in --data-dir, or --store URL): summary, users, user, delete, "
        "block, unblock, blocked. Exit codes: 0 done, 1 failed, 2 bad usage.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin-url",
        default=os.environ.get("DMDS_ADMIN_URL", DEFAULT_URL),
        help=f"the server's admin port (default: env DMDS_ADMIN_URL, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DMDS_DATA_DIR", "dmds-data")),
        help="the server's data dir: its admin-token file, and its SQLite store (default: env DMDS_DATA_DIR, "
        "else dmds-data)",
    )
    common.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("DMDS_ADMIN_TOKEN_FILE") or None,
        help="the admin token's file, if not admin-token in --data-dir",
    )
    common.add_argument(
        "--store",
        default=None,
        help="with the server stopped: postgresql://USER@HOST:PORT/DB to open (default: env DMDS_STORE, "
        "else SQLite in --data-dir)",
    )
    common.add_argument(
        "--timeout-s",
        type=float,
        default=REQUEST_TIMEOUT_S,
        help=f"seconds to wait for the admin port's answer (default: {REQUEST_TIMEOUT_S:g})",
    )
    common.add_argument("--json", action="store_true", help="print the answer as JSON, for scripts")
    commands = admin.add_subparsers(dest="admin_command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help, parents=[common])
        return parser

    command("summary", help="users, online, stored messages, the oldest undelivered, the store's size")
    users = command("users", help="list users (alias, name, registered, online, waiting, blocked)")
    users.add_argument("--prefix", default="", help="only aliases starting with this")
    users.add_argument("--after", default="", help="the page after this alias (what the last page said)")
    users.add_argument("--limit", type=int, default=100, help="users per page (default: 100, at most 1000)")
    for name, help in (
        ("user", "show one user"),
        ("disconnect", "end a user's connections (needs the running server)"),
        ("delete", "delete an account with every message, receipt, session and attachment of it"),
        ("block", "block an alias: no login, no CONNECT, no REGISTER; disconnected now"),
        ("unblock", "unblock an alias"),
    ):
        parser = command(name, help=help)
        parser.add_argument("alias")
        if name == "delete":
            parser.add_argument("--yes", action="store_true", help="do not ask")
    blocked = command("blocked", help="list the blocked aliases")
    blocked.add_argument("--prefix", default="", help="only aliases starting with this")
    command("settings", help="the settings that can change live, as they are (needs the running server)")
    setting = command("set", help="change a live setting until the next restart (needs the running server)")
    setting.add_argument("name", choices=["log_level", "max_send_rate", "send_burst"])
    setting.add_argument("value")
    admin.set_defaults(func=run)
