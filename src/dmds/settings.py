"""Settings: one frozen dataclass per concern, each field with its default and its help.

`dmds serve --help` and the README's settings table are generated from these fields, so they stay
complete. Values come from, lowest priority first: the defaults, an optional TOML file (`--config`,
one table per concern, e.g. ``[classic] max_field_bytes = 512``), ``DMDS_*`` environment variables
(``DMDS_MAX_FIELD_BYTES=512``), and command-line flags (``--max-field-bytes 512``). Field names are
unique across concerns so that one environment variable or flag names one setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


class SyncMode(enum.StrEnum):
    """How hard a commit is pushed to disk before a request is acknowledged."""

    #: fsync on every commit: survives power loss (SQLite synchronous=FULL)
    FULL = "full"
    #: WAL without fsync per commit: survives a crash of the server process, not of the machine
    NORMAL = "normal"


class LogFormat(enum.StrEnum):
    """How log records are written on stderr."""

    #: one line per record, for people: time, level, logger, message
    TEXT = "text"
    #: one JSON object per line, for log collectors (cli/logs.py lists the fields)
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = setting("0.0.0.0", "address the classic server listens on")
    port: int = setting(7000, "TCP port of the classic protocol")
    data_dir: Path = setting(Path("dmds-data"), "directory of the SQLite store")
    store: str = setting(
        "",
        "where the data lives: empty for SQLite in data_dir (one node), or postgresql://USER@HOST:PORT/DB "
        "(several nodes may share it)",
    )
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: LogFormat = setting(
        LogFormat.TEXT,
        "text: a line per record for people; json: one JSON object per line (time in UTC, level, "
        "logger, message, exc, and fields such as alias and peer) for log collectors",
    )
    control_timeout_s: float = setting(
        10.0, "seconds a client of the data dir's control socket (dmds backup) has to send its request"
    )
    gc_full_interval_s: float = setting(
        60.0,
        "seconds between full runs of Python's garbage collector, instead of its own schedule (which "
        "under load ran them often enough to cost a tenth of the server's CPU); 0: Python's schedule",
    )
    stop_timeout_s: float = setting(
        10.0,
        "seconds a stop (SIGTERM) waits for the requests in flight to be answered and the last commit "
        "before closing every connection anyway",
    )
    ports_file: str = setting(
        "",
        "file where, once every listener is bound, the server writes (atomically) a JSON object of the "
        'ports it bound and its pid, e.g. {"classic": 7000, "session": 7001, "web": 7002, "admin": 7003, '
        '"pid": 42}, for programs that start it on port 0, and removes at the stop; empty: none',
    )

    def __post_init__(self) -> None:
        _check_port("port", self.port, allow_zero=True)
        _check_positive("control_timeout_s", self.control_timeout_s)
        if self.gc_full_interval_s < 0:
            raise ValueError("gc_full_interval_s: must be >= 0")
        if self.stop_timeout_s <= 0:
            raise ValueError("stop_timeout_s: must be > 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level: unknown level {self.log_level!r}")
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"store: not a postgresql:// URL (empty for SQLite): {self.store!r}")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    sync: SyncMode = setting(
        SyncMode.FULL,
        "full: fsync before every reply, survives power loss; "
        "normal: crash-safe only (a power cut may lose the last acknowledged requests), much faster",
    )
    # 512 operations per transaction keep one commit short (~4 ms of statements) while amortising
    # the fsync: 100 rows per commit measured ~35x faster than one, and 512 against 256 took ~5%
    # less server CPU per message on a pipelining sender's Sends (its window is 500).
    max_batch: int = setting(512, "most store operations grouped into one commit")
    store_connect_timeout_s: float = setting(5.0, "seconds to connect to PostgreSQL before a request fails")
    # Long enough for a PostgreSQL restart; until then the requests of that one batch wait.
    store_outcome_timeout_s: float = setting(
        30.0, "seconds to learn whether a batch whose COMMIT broke committed, before its requests fail"
    )

    # A step pauses the store's batches while it copies: 256 pages (1 MiB) took 9 to 22 ms here under
    # load, 1024 pages 15 to 49 ms, for a copy 1.5 to 2.5 times as fast (docs/operations.md, Backups).
    backup_step_pages: int = setting(
        256, "pages a backup copies per step of the live SQLite store; the store's requests wait for a step"
    )

    def __post_init__(self) -> None:
        _check_positive("max_batch", self.max_batch)
        _check_positive("backup_step_pages", self.backup_step_pages)
        _check_positive("store_connect_timeout_s", self.store_connect_timeout_s)
        _check_positive("store_outcome_timeout_s", self.store_outcome_timeout_s)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Several nodes on one PostgreSQL store (ignored with SQLite, which serves one node)."""

    node_id: str = setting("", "this node's name in the cluster (default: host name, pid and a random part)")
    # A node that stops heartbeating for this long is dead: its session users go offline and its
    # classic users are taken over by another node. Shorter moves users sooner after a crash; too
    # short mistakes a long pause (a slow disk, a stopped VM) for a death.
    lease_s: float = setting(5.0, "seconds after which a silent node's users are taken over")

    def __post_init__(self) -> None:
        _check_positive("lease_s", self.lease_s)
        if len(self.node_id) > 64 or any(c.isspace() for c in self.node_id):
            raise ValueError(f"node_id: at most 64 characters, no spaces: {self.node_id!r}")


@dataclass(frozen=True, slots=True)
class ClassicLimits:
    # 256 bytes is ample for aliases, names and dates; the original client sent far less.
    max_field_bytes: int = setting(256, "longest field other than message text, in bytes")
    max_text_bytes: int = setting(65536, "longest message text, in bytes")
    request_timeout_s: float = setting(10.0, "seconds a client has to send its whole request")
    max_connections: int = setting(1024, "classic connections served at once; more are closed at once")
    # Lingering close (transports/linger.py): after an error reply, what the client still sends is
    # read and dropped so that closing does not reset the connection and destroy the reply. 30 s and
    # 5 s are nginx's lingering_time and lingering_timeout; 30 s lets the rest of a request some
    # 35 MB too long arrive at 10 Mbit/s. No byte cap: it would cut off the large requests this is for.
    linger_s: float = setting(
        30.0,
        "after an error reply to bad input (classic or session), seconds at most the server goes on "
        "reading and dropping what the client still sends, so that it gets the reply, before closing; "
        "no byte limit (30 s lets some 35 MB more arrive at 10 Mbit/s, as nginx's lingering_time)",
    )
    linger_idle_s: float = setting(
        5.0, "seconds of silence from the client after which a lingering connection closes sooner"
    )
    # Behind a TCP load balancer the server would dial pushes back to the balancer: with this on,
    # every connection must start with the balancer's PROXY line giving the client's address.
    proxy_protocol: bool = setting(
        False, "classic connections start with a PROXY protocol v1 line (behind HAProxy send-proxy)"
    )

    def __post_init__(self) -> None:
        for name in ("max_field_bytes", "max_text_bytes", "max_connections"):
            _check_positive(name, getattr(self, name))
        for name in ("request_timeout_s", "linger_s", "linger_idle_s"):
            _check_positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    connect_timeout_s: float = setting(3.0, "seconds to open a push connection to a client's listener")
    push_timeout_s: float = setting(5.0, "seconds to write one push and close, after connecting")
    # Pushes waiting in memory per recipient; beyond this they are read back from the store later,
    # so a flood costs disk, not memory.
    max_pending_pushes: int = setting(1000, "pushes held in memory per recipient")
    max_stored_messages: int = setting(10000, "undelivered messages stored per recipient; SEND fails beyond")
    max_stored_bytes: int = setting(
        256 * 1024 * 1024, "bytes of undelivered messages (text and attachments) stored per recipient"
    )

    # Generous for a person, a brake for a runaway program; 0 turns the limit off.
    max_send_rate: float = setting(1000.0, "messages a user may send per second on average (0: no limit)")
    send_burst: int = setting(5000, "messages a user may send in one burst above max_send_rate")
    retention_days: float = setting(30.0, "days delivered messages are kept for history")
    max_attachment_bytes: int = setting(10 * 1024 * 1024, "largest attachment, in bytes")

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "push_timeout_s", "max_pending_pushes", "max_stored_messages"):
            _check_positive(name, getattr(self, name))
        for name in ("send_burst", "retention_days", "max_attachment_bytes", "max_stored_bytes"):
            _check_positive(name, getattr(self, name))
        if self.max_send_rate < 0:
            raise ValueError("max_send_rate: must be >= 0")


@dataclass(frozen=True, slots=True)
class AccountSettings:
    # argon2id, RFC 9106's second recommended option scaled to a server: ~0.3 s a hash here, run
    # off the event loop. Tests lower both.
    argon2_time_cost: int = setting(3, "argon2id iterations per password hash")
    argon2_memory_kib: int = setting(65536, "argon2id memory per password hash, in KiB")
    min_password_length: int = setting(8, "shortest password accepted")
    token_ttl_s: float = setting(30 * 24 * 3600.0, "seconds a session token stays valid")
    login_failures: int = setting(
        5, "wrong passwords allowed per alias and per address within login_window_s"
    )
    login_window_s: float = setting(300.0, "window of the wrong-password limit, in seconds")

    def __post_init__(self) -> None:
        for name in (
            "argon2_time_cost",
            "argon2_memory_kib",
            "min_password_length",
            "token_ttl_s",
            "login_failures",
            "login_window_s",
        ):
            _check_positive(name, getattr(self, name))
        if self.argon2_memory_kib < 8:
            raise ValueError("argon2_memory_kib: argon2 needs at least 8")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    session_host: str = setting("0.0.0.0", "address the session protocol listens on")
    session_port: int = setting(7001, "TCP port of the session protocol (0: a free port)")
    web_host: str = setting(
        "0.0.0.0", "address of the session protocol over WebSocket (ws://HOST:PORT/session)"
    )
    web_port: int = setting(
        7002, "TCP port of the web client and of the session protocol over WebSocket (0: a free port)"
    )
    tls_cert: str = setting(
        "", "PEM certificate chain: serve the session protocol, and the web port, over TLS"
    )
    tls_key: str = setting("", "PEM private key of tls_cert")
    max_frame_bytes: int = setting(1024 * 1024, "largest session frame, in bytes")
    heartbeat_s: float = setting(30.0, "seconds of silence after which a Ping is sent")
    idle_timeout_s: float = setting(90.0, "seconds without a frame from the client before it is disconnected")
    handshake_timeout_s: float = setting(10.0, "seconds a new connection has to send its Hello")
    # A client that stops reading costs at most this much memory before it is cut off; its
    # undelivered messages stay stored.
    max_outgoing_bytes: int = setting(
        4 * 1024 * 1024, "bytes queued for one client before it is disconnected"
    )
    max_sessions: int = setting(20000, "session connections at once")
    typing_interval_s: float = setting(
        1.0, "least seconds between two typing notices from one connection to one user; more are dropped"
    )

    def __post_init__(self) -> None:
        _check_port("session_port", self.session_port, allow_zero=True)
        _check_port("web_port", self.web_port, allow_zero=True)
        for name in (
            "max_frame_bytes",
            "heartbeat_s",
            "idle_timeout_s",
            "max_outgoing_bytes",
            "max_sessions",
        ):
            _check_positive(name, getattr(self, name))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin port: Prometheus metrics, health checks and admin commands over HTTP."""

    # Loopback by default: the port answers operators and scrapers, not users.
    admin_host: str = setting("127.0.0.1", "address of the admin port (/metrics, /healthz, /readyz, /admin/)")
    admin_port: int = setting(7003, "TCP port of the admin HTTP server (0: off)")
    admin_token_file: str = setting(
        "",
        "file of the admin port's bearer token, made (mode 0600) at first start; empty: admin-token in "
        "data_dir (also with PostgreSQL, where data_dir holds nothing else)",
    )
    # Long enough for a store under load to answer a trivial read; short enough for a balancer.
    ready_timeout_s: float = setting(2.0, "seconds the store has to answer /readyz's read before it fails")

    def __post_init__(self) -> None:
        _check_port("admin_port", self.admin_port, allow_zero=True)
        _check_positive("ready_timeout_s", self.ready_timeout_s)


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `dmds serve` takes, one concern per attribute."""

    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    classic: ClassicLimits = field(default_factory=ClassicLimits)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name}: must be > 0, got {value}")


def _check_port(name: str, value: int, *, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ValueError(f"{name}: not a TCP port: {value}")


T = TypeVar("T")


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return kind(str(raw).lower())
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: invalid value {raw!r} ({exc})") from None


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add one flag per field of every concern of `cls`; defaults are None so sources can layer."""
    for concern, concern_cls in _field_types(cls).items():
        group = parser.add_argument_group(concern)
        types = _field_types(concern_cls)
        for f in dataclasses.fields(concern_cls):
            default = f.default
            shown = default.value if isinstance(default, enum.Enum) else default
            extra: dict[str, Any] = {}
            kind = types[f.name]
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                extra["choices"] = [m.value for m in kind]
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                metavar=None if extra else f.name.upper(),
                help=f"{f.metadata['help']} (default: {shown}; env DMDS_{f.name.upper()})",
                **extra,
            )


def load(
    cls: type[T],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> T:
    """Build `cls` from defaults < TOML file < environment < flags. Raises ValueError, naming the setting."""
    table: dict[str, Any] = {}
    if config is not None:
        try:
            table = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"config {config}: {exc}") from None
    env = env or {}
    flags = flags or {}
    concerns: dict[str, Any] = {}
    for concern, concern_cls in _field_types(cls).items():
        section = table.get(concern, {})
        if not isinstance(section, dict):
            raise ValueError(f"config: [{concern}] must be a table")
        types = _field_types(concern_cls)
        unknown = set(section) - set(types)
        if unknown:
            raise ValueError(f"config: unknown setting(s) in [{concern}]: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, kind in types.items():
            raw: Any = None
            if name in section:
                raw = section[name]
            if f"DMDS_{name.upper()}" in env:
                raw = env[f"DMDS_{name.upper()}"]
            if flags.get(name) is not None:
                raw = flags[name]
            if raw is not None:
                values[name] = _convert(name, kind, raw)
        concerns[concern] = concern_cls(**values)
    return cls(**concerns)


def describe(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(concern, name, default, help) for every setting: the source of the README's table."""
    rows = []
    for concern, concern_cls in _field_types(cls).items():
        for f in dataclasses.fields(concern_cls):
            default = f.default.value if isinstance(f.default, enum.Enum) else f.default
            rows.append((concern, f.name, str(default), str(f.metadata["help"])))
    return rows


def markdown_table(cls: type[Any]) -> str:
    """The README's settings table (`python -m dmds.settings` prints it)."""
    lines = ["| group | setting (flag / env) | default | what it does |", "| --- | --- | --- | --- |"]
    for concern, name, default, text in describe(cls):
        flag = "--" + name.replace("_", "-")
        lines.append(f"| {concern} | `{flag}` / `DMDS_{name.upper()}` | `{default}` | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table(ServeSettings))
