"""The hostile connections of the flood: what each behaviour does, and what it may cost the server."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dmds.bench.killloop import (
    HOST,
    ChaosServer,
)
from dmds.protocols.session import frames as f
from dmds.protocols.session.connection import Connection, Role
from dmds.settings import ClassicLimits, SessionSettings, StoreSettings

#: Hostile accounts: each logged-in "never read" connection resumes one of them (a newer login of
#: the same account takes over the older connection).
HOSTILE_ACCOUNTS = 4
MIB = 1024 * 1024
#: History requests pipelined by a logged-in connection that never reads: answers well past
#: max_outgoing_bytes plus what the kernel's socket buffers absorb.
HISTORY_REQUESTS = 300
#: Logged-in "never read" connections at once (their queries are what the server materialises).
MAX_UNREAD_LOGGED_IN = 8
#: Requests pipelined by an anonymous connection that never reads.
ANON_REQUESTS = 2000
WRONG_PASSWORD = "not the password"  # noqa: S105
#: Largest small answer (Pong, Error NOT_LOGGED_IN, Presence...), in bytes.
ANSWER_BYTES = 128
#: Memory an answer costs while it is built, per byte of its encoded size (see answers_being_built).
BUILD_FACTOR = 8

_PREFIX = struct.Struct(">I")


@dataclass
class Target:
    """What the hostile connections aim at, learnt during the setup."""

    server: ChaosServer
    tokens: list[str]
    page_bytes: int  # encoded size of one History page of the hostile conversation
    unread_logged_in: asyncio.Semaphore
    session: SessionSettings = field(default_factory=SessionSettings)
    classic: ClassicLimits = field(default_factory=ClassicLimits)
    store: StoreSettings = field(default_factory=StoreSettings)


# -- hostile behaviours ------------------------------------------------------------------------------
# Each returns the bytes it sent; the caller holds the connection until the server closes it (read
# to EOF) or `hold_s` passes. Those marked "never read" sleep instead of reading.

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_CLIENT = Connection(Role.CLIENT)


def _frame(frame: f.Frame) -> bytes:
    return _CLIENT.send(frame, 0)


_HELLO = _frame(f.Hello(version=f.VERSION, client="flood"))


async def _read_to_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _never_read() -> None:
    await asyncio.Event().wait()  # until hold_s: the caller's timeout


async def s_garbage(stream: Stream, rng: random.Random, target: Target) -> int:
    data = rng.randbytes(rng.randint(1, 4096))
    stream[1].write(data)
    await _read_to_eof(stream[0])
    return len(data)


async def s_stall_hello(stream: Stream, rng: random.Random, target: Target) -> int:
    data = _HELLO[: rng.randint(1, len(_HELLO) - 1)]
    stream[1].write(data)
    await _read_to_eof(stream[0])  # handshake_timeout_s
    return len(data)


async def s_stall_frame(stream: Stream, rng: random.Random, target: Target) -> int:
    size = target.session.max_frame_bytes
    data = _HELLO + _PREFIX.pack(size) + b"\x81" * (size // 2)  # half of the largest frame allowed
    stream[1].write(data)
    await _read_to_eof(stream[0])  # idle_timeout_s
    return len(data)


async def s_oversized(stream: Stream, rng: random.Random, target: Target) -> int:
    data = _HELLO + _PREFIX.pack(0xFFFFFFFF) + rng.randbytes(65536)
    stream[1].write(data)
    await _read_to_eof(stream[0])  # FRAME_TOO_LARGE at once
    return len(data)


async def s_unread_anonymous(stream: Stream, rng: random.Random, target: Target) -> int:
    frames: list[f.Frame] = []
    for n in range(1, ANON_REQUESTS + 1):
        frames.append(f.Ping(n=n) if n % 2 else f.History(id=n, peer="pair-a", limit=500))
    data = _HELLO + b"".join(_frame(fr) for fr in frames)
    stream[1].write(data)
    await _never_read()
    return len(data)


async def s_unread_logged_in(stream: Stream, rng: random.Random, target: Target) -> int:
    reader, writer = stream
    account = rng.randrange(HOSTILE_ACCOUNTS)
    codec = Connection(Role.CLIENT)
    login = _frame(f.Login(id=1, token=target.tokens[account]))
    writer.write(_HELLO + login)
    while True:  # the History requests must come after the login is done
        chunk = await reader.read(65536)
        if not chunk:
            return len(_HELLO) + len(login)
        codec.receive_data(chunk, 0)
        events = []
        while (event := codec.next_event()) is not None:
            events.append(event)
        if any(isinstance(e, f.LoggedIn | f.Error) for e in events):
            break
    peer = f"h-{(account + 1) % HOSTILE_ACCOUNTS}"
    asks = [f.Subscribe(id=2)] + [f.History(id=3 + n, peer=peer, limit=500) for n in range(HISTORY_REQUESTS)]
    data = b"".join(_frame(a) for a in asks)
    writer.write(data)
    await _never_read()  # until the server cuts it off (max_outgoing_bytes) or hold_s
    return len(_HELLO) + len(login) + len(data)


async def s_wrong_password(stream: Stream, rng: random.Random, target: Target) -> int:
    alias = rng.choice(["pair-a", "pair-b", "h-0", "nobody"])
    data = _HELLO + _frame(f.Login(id=1, alias=alias, password=WRONG_PASSWORD))
    stream[1].write(data)
    # Answered BAD_CREDENTIALS, then RATE_LIMITED; the connection stays open: leave after it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await _read_to_eof(stream[0])
    return len(data)


async def connect_close(stream: Stream, rng: random.Random, target: Target) -> int:
    if rng.random() < 0.5:  # a reset rather than a close
        sock = stream[1].get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return 0


async def c_garbage(stream: Stream, rng: random.Random, target: Target) -> int:
    data = bytes(
        rng.choice(b"\0\0ABCDEFGHIJKLMNOPQRSTUVWXYZ\xff\x80 0123456789") for _ in range(rng.randint(1, 2048))
    )
    stream[1].write(data)
    stream[1].write_eof()
    await _read_to_eof(stream[0])
    return len(data)


async def c_stall(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"SEND\0cpair-a\0cpair-b\0half a mess"
    stream[1].write(data[: rng.randint(1, len(data))])
    await _read_to_eof(stream[0])  # request_timeout_s, then "2" + 4 bytes
    return len(data)


async def c_oversized(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"SEND\0" + b"A" * MIB  # a field far past max_field_bytes, never ended
    stream[1].write(data)
    with contextlib.suppress(OSError):
        await stream[1].drain()  # the server answers, then drops the rest (it lingers)
    await _read_to_eof(stream[0])
    return len(data)


async def c_unread(stream: Stream, rng: random.Random, target: Target) -> int:
    data = b"CONNECTEDUSERS\0cpair-a\0"
    stream[1].write(data)
    await _never_read()
    return len(data)


Behaviour = Callable[[Stream, random.Random, Target], Awaitable[int]]

#: name -> (protocol, behaviour)
BEHAVIOURS: dict[str, tuple[str, Behaviour]] = {
    "session garbage": ("session", s_garbage),
    "session stall in hello": ("session", s_stall_hello),
    "session stall in frame": ("session", s_stall_frame),
    "session oversized prefix": ("session", s_oversized),
    "session never read, anonymous": ("session", s_unread_anonymous),
    "session never read, logged in": ("session", s_unread_logged_in),
    "session wrong password": ("session", s_wrong_password),
    "session connect-close": ("session", connect_close),
    "classic garbage": ("classic", c_garbage),
    "classic stall": ("classic", c_stall),
    "classic oversized field": ("classic", c_oversized),
    "classic never read": ("classic", c_unread),
    "classic connect-close": ("classic", connect_close),
}


def worst_case_bytes(name: str, sent: int, target: Target) -> int:
    """What the server may keep for one connection of behaviour `name` (see the module docstring):
    unread output up to max_outgoing_bytes, or input up to a request or a frame."""
    s, c = target.session, target.classic
    if name == "session never read, logged in":
        return min(s.max_outgoing_bytes, (1 + HISTORY_REQUESTS) * max(target.page_bytes, ANSWER_BYTES))
    if name == "session never read, anonymous":
        return min(s.max_outgoing_bytes, ANON_REQUESTS * ANSWER_BYTES)
    if name.startswith("session"):
        return min(sent, s.max_frame_bytes)
    return min(sent, c.max_text_bytes + 4 * c.max_field_bytes)


def answers_being_built_bytes(target: Target) -> int:
    """Answers the server builds before it writes them (or drops them: the asker was cut off).
    Reads run in the store's batches of at most max_batch jobs, and the results of about two
    batches are alive at once (one being turned into frames while the next is read). Each answer is
    counted `BUILD_FACTOR` times its encoded size: the rows, the objects and the bytes it passes
    through (measured: about 5 times for History pages)."""
    return 2 * target.store.max_batch * BUILD_FACTOR * max(target.page_bytes, ANSWER_BYTES)


@dataclass
class Tally:
    """Per behaviour: connections, their outcomes, the most open at once, the most bytes sent."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    open_now: Counter[str] = field(default_factory=Counter)
    peak_open: Counter[str] = field(default_factory=Counter)
    max_sent: Counter[str] = field(default_factory=Counter)


async def run_hostile(name: str, rng: random.Random, target: Target, hold_s: float, tally: Tally) -> None:
    if name == "session never read, logged in":
        async with target.unread_logged_in:  # each costs the server a batch of queries
            await _hostile_connection(name, rng, target, hold_s, tally)
    else:
        await _hostile_connection(name, rng, target, hold_s, tally)


async def _hostile_connection(
    name: str, rng: random.Random, target: Target, hold_s: float, tally: Tally
) -> None:
    protocol, behaviour = BEHAVIOURS[name]
    port = target.server.session_port if protocol == "session" else target.server.port
    try:
        async with asyncio.timeout(5):
            stream = await asyncio.open_connection(HOST, port)
    except (OSError, TimeoutError):
        tally.outcomes[(name, "connect failed")] += 1
        return
    tally.open_now[name] += 1
    tally.peak_open[name] = max(tally.peak_open[name], tally.open_now[name])
    outcome = "closed by the server"
    try:
        async with asyncio.timeout(hold_s):
            sent = await behaviour(stream, rng, target)
            tally.max_sent[name] = max(tally.max_sent[name], sent)
    except TimeoutError:
        outcome = "held until hold_s"
    except OSError:
        outcome = "reset by the server"
    finally:
        tally.open_now[name] -= 1
        stream[1].transport.abort()
    if name.endswith("connect-close"):
        outcome = "closed by the flood"
    tally.outcomes[(name, outcome)] += 1
