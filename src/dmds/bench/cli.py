"""`dmds bench`: the sub-commands, their options, and the dispatch to each workload's module.

Every workload runs against a server it starts itself on a temporary data dir (the default), or
against a running one (`--host`/`--port`). Each is bounded in count and in time, shows a progress
bar, checks what it measures, and writes JSON (`--json`) that `dmds bench report` turns into a
markdown table and a PNG chart.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmds.bench import common

#: Options that are counts (at least 1) and durations (above 0), wherever a workload has them.
_COUNTS = (
    "clients",
    "pairs",
    "messages",
    "window",
    "count",
    "runs",
    "kills",
    "fuzz_runs",
    "flood_connections",
    "nodes",
)
_DURATIONS = ("seconds", "timeout", "hold")


def _check(args: argparse.Namespace) -> None:
    for name in _COUNTS:
        if (value := getattr(args, name, None)) is not None and value < 1:
            raise SystemExit(f"dmds bench: --{name.replace('_', '-')} must be at least 1")
    for name in _DURATIONS:
        if (value := getattr(args, name, None)) is not None and value <= 0:
            raise SystemExit(f"dmds bench: --{name} must be above 0")


def _handler(module: str | None, function: str) -> Callable[[argparse.Namespace], int]:
    """Import the workload only when it runs: `dmds --help` stays fast. Without a module, the one
    named by `--protocol` (`classic` or `session`)."""

    def run(args: argparse.Namespace) -> int:
        _check(args)
        name = module if module is not None else args.protocol
        target: Callable[[argparse.Namespace], Any] = getattr(
            importlib.import_module(f"dmds.bench.{name}"), function
        )
        try:
            outcome = target(args)
        except TimeoutError:
            print(f"dmds bench {args.scenario}: not done within the time allowed", file=sys.stderr)
            return 1
        except (OSError, RuntimeError) as exc:
            # A server that is not there, a file that is not, or a check that failed: said in one
            # line rather than a traceback.
            print(f"dmds bench {args.scenario}: {exc}", file=sys.stderr)
            return 1
        if isinstance(outcome, common.Result):
            return common.finish(outcome, args.json)
        return int(outcome)

    return run


def _common(
    parser: argparse.ArgumentParser, *, runs: int = 1, sync: bool = True, cluster: bool = False
) -> None:
    parser.add_argument(
        "--host",
        default=None,
        help="bench a running server at this address (default: start one on a temporary data dir)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="with --host: the port of the protocol under test"
    )
    parser.add_argument("--runs", type=int, default=runs, help=f"repetitions (default: {runs})")
    parser.add_argument("--json", type=Path, default=None, help="write the result as JSON to this file")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent directory of the started server's data dir, where fsync is timed (default: /tmp)",
    )
    if cluster:
        parser.add_argument(
            "--store",
            default=None,
            help="run the nodes on PostgreSQL: 'local' (a throw-away server the bench starts and "
            "measures) or a postgresql:// URL of a server where it may create a database per run",
        )
        parser.add_argument(
            "--nodes", type=int, default=1, help="with --store: dmds nodes on the one database (default: 1)"
        )
    if sync:
        parser.add_argument(
            "--sync",
            action="append",
            choices=["full", "normal"],
            help="sync mode of the started server, may be repeated (default: full)",
        )


def add_parsers(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register = scenarios.add_parser(
        "register",
        help="classic REGISTER rate, N client processes: trivial uvloop server vs dmds, side by side",
    )
    register.add_argument("--clients", type=int, default=8, help="client processes (default: 8)")
    register.add_argument("--seconds", type=float, default=5.0, help="seconds per server (default: 5)")
    _common(register)
    register.set_defaults(func=_handler("classic", "run_register"))

    send = scenarios.add_parser(
        "send",
        help="N sender/recipient pairs, end to end with receipts (classic: real push listeners; "
        "session: pipelined sends)",
    )
    send.add_argument("--protocol", choices=["classic", "session"], default="session")
    send.add_argument(
        "--pairs", type=int, default=None, help="sender/recipient pairs (default: 8 classic, 1 session)"
    )
    send.add_argument(
        "--messages", type=int, default=None, help="messages per pair (default: 1000 classic, 20000 session)"
    )
    send.add_argument(
        "--window", type=int, default=500, help="session: unanswered sends at most per sender (default: 500)"
    )
    send.add_argument(
        "--mqtt",
        action="store_true",
        help="session: also run the same workload against Mosquitto, alternating, in the same result",
    )
    send.add_argument(
        "--nats",
        action="store_true",
        help="session: also run the same workload against NATS JetStream (file storage), in the same result",
    )
    send.add_argument(
        "--relay",
        action="store_true",
        help="session: also run it against the minimal durable relay (bench/relay.py), the reference",
    )
    send.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take (default: 300)")
    _common(send, cluster=True)
    send.set_defaults(func=_handler(None, "run_send"))

    queue = scenarios.add_parser(
        "queue", help="store N messages for an offline user, then connect and time the drain"
    )
    queue.add_argument("--protocol", choices=["classic", "session"], default="session")
    queue.add_argument("--messages", type=int, default=10000, help="messages queued (default: 10000)")
    queue.add_argument(
        "--mqtt",
        action="store_true",
        help="session: also run the same workload against Mosquitto, alternating, in the same result",
    )
    queue.add_argument(
        "--nats",
        action="store_true",
        help="session: also run the same workload against NATS JetStream (file storage), in the same result",
    )
    queue.add_argument(
        "--relay",
        action="store_true",
        help="session: also run it against the minimal durable relay (bench/relay.py), the reference",
    )
    queue.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take (default: 300)")
    _common(queue, cluster=True)
    queue.set_defaults(func=_handler(None, "run_queue"))

    connections = scenarios.add_parser(
        "connections", help="hold N idle logged-in session connections; server memory per connection"
    )
    connections.add_argument("--count", type=int, default=15000, help="connections to hold (default: 15000)")
    connections.add_argument(
        "--hold", type=float, default=5.0, help="seconds to hold them before measuring (default: 5)"
    )
    _common(connections)
    connections.set_defaults(func=_handler("connections", "run"))

    mqtt = scenarios.add_parser(
        "mqtt", help="the send and queue workloads against an MQTT broker (QoS 1, persistent sessions)"
    )
    mqtt.add_argument("workload", choices=["send", "queue"])
    mqtt.add_argument("--messages", type=int, default=20000, help="messages (default: 20000)")
    mqtt.add_argument(
        "--window", type=int, default=500, help="unacknowledged publishes at most (default: 500)"
    )
    mqtt.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take (default: 300)")
    _common(mqtt, sync=False)
    mqtt.set_defaults(func=_handler("mqtt", "run"))

    chaos = scenarios.add_parser(
        "chaos",
        help="reliability: SIGKILL loop under load, fuzzing (atheris), flood; counts every loss",
    )
    chaos.add_argument(
        "--part",
        action="append",
        choices=["kill", "fuzz", "flood"],
        help="what to run, may be repeated (default: all three)",
    )
    chaos.add_argument("--kills", type=int, default=20, help="kill loop: SIGKILLs (default: 20)")
    chaos.add_argument(
        "--nodes", type=int, default=1, help="kill loop: nodes on one PostgreSQL store (default: 1, SQLite)"
    )
    chaos.add_argument(
        "--store",
        default=None,
        help="kill loop: PostgreSQL for the nodes: `local` (a throw-away server the bench starts, the "
        "default with --nodes > 1) or a postgresql:// URL where it may create a database",
    )
    chaos.add_argument(
        "--kill-db",
        action="store_true",
        help="kill loop: every third kill is the database's (SIGKILL, then restart): needs --store local",
    )
    chaos.add_argument(
        "--fuzz-runs", type=int, default=200000, help="fuzz: inputs per target (default: 200000)"
    )
    chaos.add_argument(
        "--flood-connections",
        type=int,
        default=3000,
        help="flood: hostile connections (default: 3000)",
    )
    chaos.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    chaos.add_argument("--json", type=Path, default=None, help="write the counts as JSON to this file")
    chaos.set_defaults(func=_handler("chaos", "run"))

    report = scenarios.add_parser("report", help="turn JSON results into a markdown table and a PNG chart")
    report.add_argument("results", nargs="+", type=Path, help="JSON files written by --json")
    report.add_argument(
        "--out", type=Path, default=Path("bench-report"), help="directory for report.md and report.png"
    )
    report.set_defaults(func=_handler("report", "run"))
