"""`dmds admin` against a real `dmds serve`: each command over the admin port (real HTTP, the token
from the data dir), and on the store of a stopped server; blocking, disconnecting and deleting seen
from real session and classic clients; one log line per action."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dmds.client.session import Disconnected, SessionClient
from dmds.protocols.session import frames as f
from dmds.protocols.session.codes import ErrorCode
from tests import wire
from tests.client.test_session_client import Inbox
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.integration.admin_http import admin_flags, get
from tests.integration.listener import Listener, exchange
from tests.integration.session_wire import Peer, account


@pytest.fixture
def admin_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(*FAST, *admin_flags())


def admin(
    server: ServerProcess, *argv: str, url: str = "", check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """`dmds admin ARGV` pointed at `server` (its admin port, its data dir)."""
    where = [
        "--admin-url",
        url or f"http://127.0.0.1:{server.admin_port}",
        "--data-dir",
        str(server.data_dir),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "admin", argv[0], *where, *argv[1:]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def admin_json(server: ServerProcess, *argv: str, url: str = "") -> Any:
    return json.loads(admin(server, *argv, "--json", url=url).stdout)


async def aadmin(
    server: ServerProcess, *argv: str, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(admin, server, *argv, check=check)


async def closed_with(peer: Peer, code: ErrorCode) -> None:
    """The server closes `peer`'s connection with an Error of `code`."""
    error = await peer.expect(f.Error, code=code)
    assert error.re == 0
    await peer.wait_closed()


def actions_logged(server: ServerProcess, action: str) -> list[str]:
    return [line for line in server.log().splitlines() if f": {action} " in line and "admin " in line]


async def test_summary_users_and_user(admin_server: ServerProcess) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    assert exchange(server.port, wire.register("María López", "maria", "03/04/2001")) == b"0\0"
    assert isinstance(await juan.request(f.Send, to="maria", key="k", text="hola"), f.Accepted)

    summary = await asyncio.to_thread(admin_json, server, "summary")
    assert (summary["users"], summary["online"], summary["stored_messages"]) == (2, 1, 1)
    text = (await aadmin(server, "summary")).stdout
    assert "users               2" in text
    assert "stored messages     1 (4 bytes)" in text

    page = await asyncio.to_thread(admin_json, server, "users")
    assert [u["alias"] for u in page["users"]] == ["juan", "maria"]
    assert page["next"] is None
    by_alias = {u["alias"]: u for u in page["users"]}
    assert (by_alias["juan"]["online"], by_alias["juan"]["protocol"], by_alias["juan"]["protected"]) == (
        True, "session", True,
    )  # fmt: skip
    assert (by_alias["maria"]["online"], by_alias["maria"]["stored_messages"]) == (False, 1)
    assert by_alias["maria"]["full_name"] == "María López"
    first = await asyncio.to_thread(admin_json, server, "users", "--limit", "1")
    assert ([u["alias"] for u in first["users"]], first["next"]) == (["juan"], "juan")
    rest = await asyncio.to_thread(admin_json, server, "users", "--after", "juan")
    assert [u["alias"] for u in rest["users"]] == ["maria"]
    only = await asyncio.to_thread(admin_json, server, "users", "--prefix", "ma")
    assert [u["alias"] for u in only["users"]] == ["maria"]
    table = (await aadmin(server, "users")).stdout.splitlines()
    assert table[0].split() == ["alias", "full", "name", "registered", "online", "waiting", "blocked"]
    assert table[2].startswith("maria")
    assert "María López" in table[2]

    maria = await asyncio.to_thread(admin_json, server, "user", "maria")
    assert (maria["alias"], maria["stored_messages"], maria["stored_bytes"], maria["blocked"]) == (
        "maria",
        1,
        4,
        False,
    )
    assert "waiting         1 message(s), 4 bytes" in (await aadmin(server, "user", "maria")).stdout
    missing = await aadmin(server, "user", "nobody", check=1)
    assert "no such user" in missing.stderr
    assert (await aadmin(server, "users", "--limit", "0", check=2)).stderr
    await juan.close()


async def test_the_token_is_required(admin_server: ServerProcess, tmp_path: Path) -> None:
    server = admin_server
    for path in ("/admin/users", "/admin/users/juan", "/admin/settings", "/admin/blocked"):
        assert (await get(server, path, token=None)).status == 401
        assert (await get(server, path, token="wrong")).status == 403
        assert (await get(server, path)).status == (404 if path.endswith("juan") else 200)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not the token\n")
    refused = await aadmin(server, "block", "juan", "--token-file", str(wrong), check=1)
    assert "403" in refused.stderr
    assert not actions_logged(server, "block")  # refused before anything was done
    page = await get(server, "/admin/blocked")
    assert page.json() == {"blocked": []}


async def test_block_stops_logins_and_classic_connects_and_survives_a_restart(
    admin_server: ServerProcess,
) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    listener = Listener()
    assert exchange(server.port, wire.register("Ana", "ana", "01/02/2000")) == b"0\0"
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"0\0"

    blocked = await asyncio.to_thread(admin_json, server, "block", "juan")
    assert (blocked["newly"], blocked["registered"], blocked["was_online"]) == (True, True, True)
    await closed_with(juan, ErrorCode.BLOCKED)  # its open connection is closed, saying why
    again = await Peer.open(server.session_port)
    refused = await again.request(f.Login, alias="juan", password="secret password")
    assert isinstance(refused, f.Error)
    assert refused.code == ErrorCode.BLOCKED
    token = await again.request(f.Login, token=juan.token)  # its tokens were revoked
    assert isinstance(token, f.Error)
    assert token.code == ErrorCode.BAD_TOKEN
    wrong = await again.request(f.Login, alias="juan", password="not the password")
    assert isinstance(wrong, f.Error)
    assert wrong.code == ErrorCode.BAD_CREDENTIALS

    assert "ana blocked, and disconnected" in (await aadmin(server, "block", "ana")).stdout
    assert (await asyncio.to_thread(admin_json, server, "user", "ana"))["online"] is False
    assert exchange(server.port, wire.send("ana", "juan", "still here?"))[:2] == b"2\0"  # not connected
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"3\0"  # CONNECT: other error
    assert exchange(server.port, wire.unregister("ana")) == b"2\0"
    # an alias nobody has: reserved; REGISTER says it is taken (classic) or blocked (session)
    assert "not registered" in (await aadmin(server, "block", "ghost")).stdout
    assert exchange(server.port, wire.register("Ghost", "ghost", "01/02/2000")) == b"1\0"
    taken = await again.request(
        f.Register, alias="ghost", full_name="G", birth_date="01/02/2000", password="secret password"
    )
    assert isinstance(taken, f.Error)
    assert taken.code == ErrorCode.BLOCKED
    assert "was blocked already" in (await aadmin(server, "block", "ana")).stdout
    listed = await asyncio.to_thread(admin_json, server, "blocked")
    assert [b["alias"] for b in listed["blocked"]] == ["ana", "ghost", "juan"]
    await again.close()

    server.stop()
    server.start()
    peer = await Peer.open(server.session_port)
    refused = await peer.request(f.Login, alias="juan", password="secret password")
    assert isinstance(refused, f.Error)
    assert refused.code == ErrorCode.BLOCKED
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"3\0"
    assert (await asyncio.to_thread(admin_json, server, "user", "juan"))["blocked"] is True

    assert "juan unblocked" in (await aadmin(server, "unblock", "juan")).stdout
    assert "juan was not blocked" in (await aadmin(server, "unblock", "juan")).stdout
    assert isinstance(await peer.request(f.Login, alias="juan", password="secret password"), f.LoggedIn)
    await aadmin(server, "unblock", "ana")
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"0\0"
    assert len(actions_logged(server, "block")) == 4
    assert len(actions_logged(server, "unblock")) == 3
    await peer.close()
    listener.close()


async def test_disconnect_closes_a_session_and_ends_a_classic_presence(admin_server: ServerProcess) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    listener = Listener()
    assert exchange(server.port, wire.register("Ana", "ana", "01/02/2000")) == b"0\0"
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"0\0"

    assert (await aadmin(server, "disconnect", "juan")).stdout.strip() == "disconnected juan"
    await closed_with(juan, ErrorCode.KICKED)
    gone = await asyncio.to_thread(admin_json, server, "disconnect", "ana")
    assert (gone["was_online"], gone["protocol"]) == (True, "classic")
    assert exchange(server.port, wire.send("ana", "juan", "hola"))[:2] == b"2\0"  # no longer connected
    assert (await asyncio.to_thread(admin_json, server, "summary"))["online"] == 0
    assert (await aadmin(server, "disconnect", "ana")).stdout.strip() == "ana was not online"
    assert "no such user" in (await aadmin(server, "disconnect", "nobody", check=1)).stderr
    # not blocked: both come back
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"0\0"
    back = await Peer.open(server.session_port)
    assert isinstance(await back.request(f.Login, token=juan.token), f.LoggedIn)
    assert len(actions_logged(server, "disconnect")) == 3
    await back.close()
    listener.close()


async def test_delete_removes_the_account_and_everything_of_it(admin_server: ServerProcess) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    for n in range(3):
        assert isinstance(await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}"), f.Accepted)
    assert isinstance(await maria.request(f.Send, to="juan", key="r", text="answer"), f.Accepted)
    await maria.expect(f.Message, message_id=3)  # pushed, never acknowledged: still stored
    await juan.expect(f.Message, message_id=1)
    juan.write(f.Ack(message_ids=[1]))
    await maria.expect(f.Delivered, message_id=1)

    refused = await aadmin(server, "delete", "maria", check=2)  # no terminal to ask on, no --yes
    assert "--yes" in refused.stderr
    done = await asyncio.to_thread(admin_json, server, "delete", "maria", "--yes")
    assert done == {"deleted": "maria", "stored_messages": 3}
    await closed_with(maria, ErrorCode.KICKED)
    assert "no such user" in (await aadmin(server, "user", "maria", check=1)).stderr
    summary = await asyncio.to_thread(admin_json, server, "summary")
    assert (summary["users"], summary["stored_messages"]) == (1, 0)
    again = await Peer.open(server.session_port)
    token = await again.request(f.Login, token=maria.token)
    assert isinstance(token, f.Error)
    assert token.code == ErrorCode.BAD_TOKEN
    history = await juan.request(f.History, peer="maria", before=0, limit=100)
    # what maria received went with her; what she sent juan is his
    assert [(e.sender, e.text) for e in history.entries] == [("maria", "answer")]
    # the alias is free again (a delete is no block), with an empty mailbox
    fresh = await account(server.session_port, "maria")
    assert isinstance(await juan.request(f.Send, to="maria", key="new", text="hola"), f.Accepted)
    first = await fresh.expect(f.Message)
    assert (first.message_id, first.text) == (1, "hola")
    assert "no such user" in (await aadmin(server, "delete", "nobody", "--yes", check=1)).stderr
    [line] = actions_logged(server, "delete account")
    assert "WARNING" in line
    assert "maria" in line
    for peer in (juan, again, fresh):
        await peer.close()


async def test_set_changes_the_send_rate_and_the_log_level(admin_server: ServerProcess) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    await account(server.session_port, "maria")
    for n in range(10):  # the default rate lets these through
        assert isinstance(await juan.request(f.Send, to="maria", key=f"a{n}", text="x"), f.Accepted)

    assert "max_send_rate   1.0" in (await aadmin(server, "set", "max_send_rate", "1")).stdout
    now = await asyncio.to_thread(admin_json, server, "set", "send_burst", "2")
    assert (now["max_send_rate"], now["send_burst"]) == (1.0, 2)
    answers = [await juan.request(f.Send, to="maria", key=f"b{n}", text="x") for n in range(5)]
    limited = [a for a in answers if isinstance(a, f.Error)]
    assert 2 <= len(limited) <= 3, answers  # a burst of 2, then 1 a second
    assert all(a.code == ErrorCode.LIMIT_EXCEEDED for a in limited)

    assert (await asyncio.to_thread(admin_json, server, "settings"))["log_level"] == "INFO"
    await aadmin(server, "set", "log_level", "debug")
    assert (await asyncio.to_thread(admin_json, server, "settings"))["log_level"] == "DEBUG"
    await aadmin(server, "set", "max_send_rate", "0")  # 0: no limit
    for n in range(10):
        assert isinstance(await juan.request(f.Send, to="maria", key=f"c{n}", text="x"), f.Accepted)
    assert "must be >= 0" in (await aadmin(server, "set", "max_send_rate", "-1", check=2)).stderr
    assert "log_level" in (await aadmin(server, "set", "log_level", "LOUD", check=2)).stderr
    assert (await aadmin(server, "set", "send_burst", "many", check=2)).stderr
    assert (await aadmin(server, "set", "retention_days", "1", check=2)).stderr  # not live: argparse says
    assert len(actions_logged(server, "set")) == 4
    await juan.close()


async def test_a_stopped_server_store_is_opened_directly(admin_server: ServerProcess) -> None:
    server = admin_server
    juan = await account(server.session_port, "juan")
    await (await account(server.session_port, "maria")).close()
    assert isinstance(await juan.request(f.Send, to="maria", key="k", text="hola"), f.Accepted)
    await juan.close()
    url = f"http://127.0.0.1:{server.admin_port}"
    server.stop()

    summary = await asyncio.to_thread(admin, server, "summary", url=url)
    assert "the server is not running" in summary.stderr
    assert "using the store directly" in summary.stderr
    assert "users               2" in summary.stdout
    assert "online              0" in summary.stdout
    users = await asyncio.to_thread(admin_json, server, "users", url=url)
    assert [(u["alias"], u["stored_messages"], u["online"]) for u in users["users"]] == [
        ("juan", 0, False), ("maria", 1, False),
    ]  # fmt: skip
    assert (await asyncio.to_thread(admin_json, server, "user", "maria", url=url))["stored_bytes"] == 4
    blocked = await asyncio.to_thread(admin, server, "block", "juan", url=url)
    assert "juan blocked" in blocked.stdout
    assert "block juan" in blocked.stderr  # the action's log line, on the command's stderr
    assert (
        "deleted maria"
        in (await asyncio.to_thread(admin, server, "delete", "maria", "--yes", url=url)).stdout
    )
    for needs_server in (("disconnect", "juan"), ("set", "log_level", "DEBUG"), ("settings",)):
        refused = await asyncio.to_thread(admin, server, *needs_server, url=url, check=1)
        assert "needs the running server" in refused.stderr
    assert (await asyncio.to_thread(admin_json, server, "blocked", url=url))["blocked"][0]["alias"] == "juan"

    server.start()
    peer = await Peer.open(server.session_port)
    refused = await peer.request(f.Login, alias="juan", password="secret password")
    assert isinstance(refused, f.Error)
    assert refused.code == ErrorCode.BLOCKED
    assert (await get(server, "/admin/users")).json()["users"][0]["alias"] == "juan"  # maria is gone
    assert len((await get(server, "/admin/users")).json()["users"]) == 1
    url = f"http://127.0.0.1:{server.admin_port}"
    server.stop()
    assert "juan unblocked" in (await asyncio.to_thread(admin, server, "unblock", "juan", url=url)).stdout
    server.start()
    peer = await Peer.open(server.session_port)
    assert isinstance(await peer.request(f.Login, alias="juan", password="secret password"), f.LoggedIn)
    await peer.close()


def test_a_missing_store_and_a_bad_url_are_said(server_factory: ServerFactory, tmp_path: Path) -> None:
    nowhere = ServerProcess(tmp_path / "nothing", tmp_path / "x.log")
    url = "http://127.0.0.1:1"
    missing = admin(nowhere, "summary", url=url, check=1)
    assert "no store at" in missing.stderr
    assert not (tmp_path / "nothing").exists()  # nothing made where there was nothing
    assert admin(nowhere, "summary", url="ftp://x", check=2).stderr
    assert "--timeout-s" in admin(nowhere, "summary", "--timeout-s", "0", url=url, check=2).stderr


async def test_two_nodes_on_postgresql(server_factory: ServerFactory, pg_url: str, tmp_path: Path) -> None:
    """Disconnect and block of a user served by another node: that node closes their connection."""
    node_a = server_factory(*FAST, *admin_flags(), "--store", pg_url, data_dir=tmp_path / "a")
    node_b = server_factory(*FAST, *admin_flags(), "--store", pg_url, data_dir=tmp_path / "b")
    juan = await account(node_a.session_port, "juan")
    listener = Listener()
    assert exchange(node_a.port, wire.register("Ana", "ana", "01/02/2000")) == b"0\0"
    assert exchange(node_a.port, wire.connect("ana", listener.port)) == b"0\0"
    deadline = time.monotonic() + 10
    while (await asyncio.to_thread(admin_json, node_b, "summary"))["online"] != 2:
        assert time.monotonic() < deadline, "node b does not see node a's users"
        await asyncio.sleep(0.1)
    seen = await asyncio.to_thread(admin_json, node_b, "user", "juan")
    assert (seen["online"], seen["node"]) == (True, (await get(node_a, "/admin/summary")).json()["node"])

    out = await asyncio.to_thread(admin_json, node_b, "disconnect", "juan")
    assert out["was_online"] is True
    # node a closes it as a takeover: the cluster carries no reason
    await closed_with(juan, ErrorCode.ALREADY_LOGGED_IN)
    await asyncio.to_thread(admin_json, node_b, "disconnect", "ana")
    assert exchange(node_a.port, wire.send("ana", "juan", "x"))[:2] == b"2\0"

    juan = await account(node_a.session_port, "juan", register=False)
    await asyncio.to_thread(admin_json, node_b, "block", "juan")
    await closed_with(juan, ErrorCode.ALREADY_LOGGED_IN)
    for node in (node_a, node_b):
        peer = await Peer.open(node.session_port)
        refused = await peer.request(f.Login, alias="juan", password="secret password")
        assert isinstance(refused, f.Error)
        assert refused.code == ErrorCode.BLOCKED
        await peer.close()

    # the store opened directly while the nodes run (nothing at the admin URL): the block still
    # reaches the node serving juan, through the presence table's notification
    await asyncio.to_thread(admin_json, node_b, "unblock", "juan")
    juan = await account(node_a.session_port, "juan", register=False)
    offline = await asyncio.to_thread(
        admin, node_b, "block", "juan", "--store", pg_url, url="http://127.0.0.1:1"
    )
    assert "using the store directly" in offline.stderr
    await closed_with(juan, ErrorCode.ALREADY_LOGGED_IN)

    # stopped nodes: the store is opened with --store
    url = f"http://127.0.0.1:{node_b.admin_port}"
    node_a.stop()
    node_b.stop()
    users = await asyncio.to_thread(admin_json, node_b, "users", "--store", pg_url, url=url)
    assert [(u["alias"], u["blocked"]) for u in users["users"]] == [("ana", False), ("juan", True)]
    summary = await asyncio.to_thread(admin, node_b, "summary", "--store", pg_url, url=url)
    assert "unknown (other nodes may serve)" in summary.stdout
    listener.close()


def test_a_server_without_its_admin_port_keeps_its_store(server_factory: ServerFactory) -> None:
    server = server_factory(*FAST)  # --admin-port 0: nothing to talk to, and the store is locked
    assert exchange(server.port, wire.register("Ana", "ana", "01/02/2000")) == b"0\0"
    refused = admin(server, "block", "ana", url="http://127.0.0.1:1", check=1)
    assert "is a server running on it" in refused.stderr
    # the server went on undisturbed, and nothing was blocked
    assert exchange(server.port, wire.register("Bob", "bob", "01/02/2000")) == b"0\0"
    listener = Listener()
    assert exchange(server.port, wire.connect("ana", listener.port)) == b"0\0"
    listener.close()


@pytest.mark.parametrize("command", ["disconnect", "block"])
async def test_our_client_does_not_reconnect_after_the_operator_ends_it(
    admin_server: ServerProcess, command: str
) -> None:
    inbox = Inbox()
    client = await SessionClient.connect(
        "127.0.0.1", admin_server.session_port, reconnect=True, on_event=inbox
    )
    await client.register("juan", "Juan", "01/02/2000", "secret password")
    await client.login("juan", "secret password")
    await aadmin(admin_server, command, "juan")
    gone = await inbox.expect(Disconnected)
    assert not gone.reconnecting, gone
    assert "operator" in gone.reason
    assert client.closed
    await client.close()
