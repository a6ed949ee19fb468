"""`dmds backup` and `dmds restore` with real processes: a backup of a live server under load, restored.

issue 13: a backup taken while the server accepts messages holds every message acknowledged before
the backup began; restored into a new data dir and served again, each of them is pending for its
recipient, with its text and id, and nothing is there that was not sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dmds.protocols.session import frames as f
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.session_wire import Peer, account

RECIPIENTS = ("rita", "raul", "rosa")
SENDERS = ("sam", "sara", "simon", "sofia")
#: Small steps: the copy of a few MB goes in many steps, interleaved with the load's batches.
# No send rate limit and room for everything the senders manage while the backup runs: a refused
# send would be an Error, not the Accepted the senders wait for.
SMALL_STEPS = ("--backup-step-pages", "16", "--max-send-rate", "0", "--max-stored-messages", "1000000")


def dmds(*args: str | Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def _send_until(
    port: int, alias: str, stop: asyncio.Event, acked: dict[tuple[str, int], tuple[str, str, float]]
) -> set[tuple[str, str, str]]:
    """Pipelined sends (up to 50 unanswered) until `stop`; each Accepted goes into `acked` as
    (recipient, id) -> (sender, text, when). Returns everything sent, answered or not."""
    peer = await account(port, alias)
    sent: set[tuple[str, str, str]] = set()
    waiting: dict[int, tuple[str, str]] = {}
    n = 0
    while not stop.is_set() or waiting:
        while not stop.is_set() and len(waiting) < 50:
            n += 1
            to, text = RECIPIENTS[n % len(RECIPIENTS)], f"{alias} says {n}"
            rid = next(peer.ids)
            peer.write(f.Send(id=rid, to=to, key=f"{alias}-{n}", text=text))
            waiting[rid] = (to, text)
            sent.add((to, alias, text))
        answer = await _answer(peer)
        to, text = waiting.pop(answer.re)
        acked[(to, answer.message_id)] = (alias, text, time.monotonic())
    await peer.close()
    return sent


async def _answer(peer: Peer) -> f.Accepted:
    """The next answer to a send: an Accepted, or the test fails at once with the Error's code."""
    async with asyncio.timeout(30):
        while True:
            for i, frame in enumerate(peer.inbox):
                if isinstance(frame, f.Accepted | f.Error):
                    del peer.inbox[i]
                    if isinstance(frame, f.Error):
                        raise AssertionError(f"a send was refused: {frame.code.name} {frame.message}")
                    return frame
            assert not peer.closed, "the server closed the connection"
            await peer.read_more()


async def _pending(port: int, alias: str) -> list[f.Message]:
    """Everything pushed to `alias` at login, until the server has been quiet for a second."""
    peer = await account(port, alias, register=False)
    got: list[f.Message] = []
    while True:
        try:
            got.append(await peer.expect(f.Message, timeout_s=1.0))
        except TimeoutError:
            break
    await peer.close()
    return got


async def test_a_backup_under_load_restored_holds_every_message_acknowledged_before_it(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(*SMALL_STEPS)
    for alias in RECIPIENTS:
        await (await account(server.session_port, alias)).close()  # offline: their messages wait
    acked: dict[tuple[str, int], tuple[str, str, float]] = {}
    stop = asyncio.Event()
    senders = [asyncio.create_task(_send_until(server.session_port, a, stop, acked)) for a in SENDERS]
    while len(acked) < 3000:  # a store of some size first, the load still running
        await asyncio.sleep(0.05)
    before = dict(acked)
    began = time.monotonic()
    backup = tmp_path / "backup.sqlite3"
    done = await asyncio.to_thread(dmds, "backup", backup, "--data-dir", server.data_dir)
    ended = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    sent = set().union(*await asyncio.gather(*senders))
    assert server.stop() == 0

    assert done.returncode == 0, done.stderr
    assert "backup of the running server's store" in done.stdout
    during = [key for key, (_, _, when) in acked.items() if began < when < ended]
    assert len(during) > 100, "the load did not run during the backup"
    assert "steps" in done.stdout

    restored = tmp_path / "restored"
    put = dmds("restore", backup, "--data-dir", restored)
    assert put.returncode == 0, put.stderr
    again = server_factory(data_dir=restored)
    for recipient in RECIPIENTS:
        pushed = await _pending(again.session_port, recipient)
        ids = [m.message_id for m in pushed]
        assert ids == list(range(1, len(ids) + 1)), f"{recipient}: gaps or disorder"
        for m in pushed:  # nothing that was not sent, and the text an acknowledgement named
            assert (recipient, m.sender, m.text) in sent
            if (recipient, m.message_id) in acked:
                assert acked[(recipient, m.message_id)][:2] == (m.sender, m.text)
        got = {m.message_id: (m.sender, m.text) for m in pushed}
        for (to, message_id), (sender, text, _) in before.items():
            if to == recipient:
                assert got.get(message_id) == (sender, text), f"{recipient} lost {message_id}"


async def test_restore_refuses_the_data_dir_of_a_running_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    juan = await account(server.session_port, "juan")
    maria = await account(server.session_port, "maria")
    backup = tmp_path / "backup.sqlite3"
    assert dmds("backup", backup, "--data-dir", server.data_dir).returncode == 0
    refused = dmds("restore", backup, "--data-dir", server.data_dir)
    assert refused.returncode == 1
    assert "a server is running" in refused.stderr
    assert not [name for name in os.listdir(server.data_dir) if "restore" in name]  # nothing moved
    accepted = await juan.request(f.Send, to="maria", key="k", text="still here")
    assert isinstance(accepted, f.Accepted)
    assert (await maria.expect(f.Message)).text == "still here"


async def test_restore_refuses_a_file_that_is_not_a_dmds_backup(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(10000))
    refused = dmds("restore", garbage, "--data-dir", tmp_path / "data")
    assert refused.returncode == 1
    assert "not a SQLite database" in refused.stderr
    assert "Traceback" not in refused.stderr
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text)")
    conn.commit()
    conn.close()
    refused = dmds("restore", other, "--data-dir", tmp_path / "data")
    assert refused.returncode == 1
    assert "not a dmds store" in refused.stderr
    server = server_factory()  # the data dir is still usable: nothing was put in place
    await (await account(server.session_port, "juan")).close()


async def test_a_backup_of_a_stopped_store_restores(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory()
    await (await account(server.session_port, "maria")).close()
    juan = await account(server.session_port, "juan")
    for n in range(1, 21):
        assert (await juan.request(f.Send, to="maria", key=f"k{n}", text=f"m{n}")).message_id == n
    await juan.close()
    server.kill()  # not even a clean stop: the last commits are in the WAL
    backup = tmp_path / "backup.sqlite3"
    done = dmds("backup", backup, "--data-dir", server.data_dir)
    assert done.returncode == 0, done.stderr
    assert "backup of the stopped store" in done.stdout
    exists = dmds("backup", backup, "--data-dir", server.data_dir)
    assert exists.returncode == 1
    assert "exists (--force" in exists.stderr
    assert dmds("restore", backup, "--data-dir", tmp_path / "restored").returncode == 0
    again = server_factory(data_dir=tmp_path / "restored")
    assert [m.text for m in await _pending(again.session_port, "maria")] == [f"m{n}" for n in range(1, 21)]


def _control(server: ServerProcess, data: bytes, *, timeout_s: float = 10.0) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(server.data_dir / "control.sock"))
        sock.sendall(data)
        with sock.makefile("rb") as lines:
            return [json.loads(line) for line in lines]


def test_the_control_socket_answers_bad_requests_and_stays_up(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--control-timeout-s", "0.5")
    assert os.stat(server.data_dir / "control.sock").st_mode & 0o777 == 0o600
    assert _control(server, b"not json\n") == [
        {"ok": False, "error": "bad request: Expecting value: line 1 column 1 (char 0)"}
    ]
    assert "unknown op" in str(_control(server, b'{"op": "drop tables"}\n'))
    assert "absolute path" in str(_control(server, b'{"op": "backup", "dest": "relative.sqlite3"}\n'))
    assert "over 16384 bytes" in str(_control(server, b"x" * 100_000))
    assert "no request within 0.5 s" in str(_control(server, b""))  # says nothing: timed out
    answer = _control(
        server, json.dumps({"op": "backup", "dest": str(tmp_path / "b.sqlite3")}).encode() + b"\n"
    )
    assert answer[-1]["ok"] is True
    assert server.proc is not None
    assert server.proc.poll() is None
    assert server.stop() == 0
    assert not (server.data_dir / "control.sock").exists()  # removed at a clean stop


async def test_a_server_killed_leaves_a_socket_the_next_one_replaces(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    server.kill()
    assert (server.data_dir / "control.sock").exists()
    done = dmds("backup", tmp_path / "b.sqlite3", "--data-dir", server.data_dir)  # nobody listens: offline
    assert done.returncode == 0, done.stderr
    assert "stopped store" in done.stdout
    again = server_factory(data_dir=server.data_dir)
    done = dmds("backup", tmp_path / "c.sqlite3", "--data-dir", again.data_dir)
    assert done.returncode == 0, done.stderr
    assert "running server" in done.stdout


def test_backup_with_the_postgresql_store_points_to_the_docs(tmp_path: Path) -> None:
    env = os.environ | {"DMDS_STORE": "postgresql://dmds@127.0.0.1:5432/dmds"}
    done = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "backup", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "pg_dump" in done.stderr
    assert not (tmp_path / "b").exists()


async def _big_store(server: ServerProcess, count: int = 20000) -> None:
    """`count` messages of 2 kB for an offline user: a store that a 1-page-step backup copies for seconds."""
    await (await account(server.session_port, "rita")).close()
    peer = await account(server.session_port, "sam")
    text = "x" * 2000
    for start in range(1, count + 1, 500):
        for n in range(start, min(count, start + 499) + 1):
            peer.write(f.Send(id=next(peer.ids), to="rita", key=f"k{n}", text=text))
        for _ in range(start, min(count, start + 499) + 1):
            await peer.expect(f.Accepted, timeout_s=30)
    await peer.close()


def _start_backup(server: ServerProcess, dest: Path) -> socket.socket:
    """A backup asked for on the raw socket, returned once the server reports progress."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(server.data_dir / "control.sock"))
    sock.sendall(json.dumps({"op": "backup", "dest": str(dest)}).encode() + b"\n")
    assert "progress" in json.loads(sock.makefile("rb").readline())
    return sock


SLOW = ("--backup-step-pages", "1", "--max-send-rate", "0", "--max-stored-messages", "100000")


async def test_a_client_that_goes_away_cancels_its_backup(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(*SLOW)
    await _big_store(server)
    (tmp_path / "out").mkdir()
    _start_backup(server, tmp_path / "out" / "b.sqlite3").close()
    deadline = time.monotonic() + 20
    while "cancelled: the client went away" not in server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "cancelled: the client went away" in server.log()
    await asyncio.sleep(0.5)
    assert os.listdir(tmp_path / "out") == []  # neither the backup nor its temporary file
    done = dmds("backup", tmp_path / "out" / "b.sqlite3", "--data-dir", server.data_dir)
    assert done.returncode == 0, done.stderr  # and the next one runs


async def test_sigterm_during_a_backup_stops_the_server_cleanly(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(*SLOW)
    await _big_store(server)
    (tmp_path / "out").mkdir()
    sock = _start_backup(server, tmp_path / "out" / "b.sqlite3")
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 10
    sock.close()
    assert os.listdir(tmp_path / "out") == []
    assert not (server.data_dir / "dmds.sqlite3-wal").exists()  # the store was closed cleanly
    conn = sqlite3.connect(server.data_dir / "dmds.sqlite3")
    assert conn.execute("SELECT count(*) FROM messages").fetchone() == (20000,)
    conn.close()
