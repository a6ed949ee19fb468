"""`dmds cluster`: a throw-away PostgreSQL and several nodes on it, in one command, to try dmds as a
cluster on one machine. Ctrl-C (or SIGTERM) stops the nodes, then the database, and removes it."""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: seconds a node has to open its three ports
START_TIMEOUT_S = 30.0
#: ports per node, consecutive from --base-port: classic, session, web
PORTS_PER_NODE = 3


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "cluster",
        help="try several nodes at once: a throw-away PostgreSQL and N `dmds serve` on it",
        description="Start a throw-away PostgreSQL (or use --store), N nodes on consecutive ports "
        "(node i: classic BASE+3i, session BASE+3i+1, web BASE+3i+2) and the SOAP normaliser; print "
        "how to point clients at them; Ctrl-C stops everything and removes the database. Arguments "
        "after `--` go to every `dmds serve`, e.g. `dmds cluster -- --lease-s 2`.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default: 3)")
    parser.add_argument(
        "--base-port", type=int, default=7100, help="first node's classic port (default: 7100)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the nodes listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="a postgresql:// URL to use instead of a throw-away server (its data is kept)",
    )
    parser.add_argument(
        "--soap-port", type=int, default=5000, help="SOAP normaliser's port; 0 to start none (default: 5000)"
    )
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="settings for every node, after --")
    parser.set_defaults(func=run)


def _child(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        # A session of its own: Ctrl-C reaches us only, and we stop the nodes before the database.
        return subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _wait_listening(proc: subprocess.Popen[bytes], host: str, ports: list[int], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(ports)
    while waiting:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"did not listen on {waiting} within {START_TIMEOUT_S:.0f} s")
        try:
            with socket.create_connection((host, waiting[0]), timeout=0.5):
                waiting.pop(0)
        except OSError:
            time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> int:
    extra = [a for a in args.serve_args if a != "--"] if args.serve_args else []
    if args.nodes < 1:
        print("dmds cluster: --nodes must be at least 1", file=sys.stderr)
        return 2
    # Handled like Ctrl-C: the `finally` below stops everything in order.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="dmds-cluster-"))
    database: Any = None
    procs: list[subprocess.Popen[bytes]] = []
    clean = False  # logs are kept (and named) when something went wrong
    try:
        if args.store:
            url = args.store
        else:
            from dmds.cluster.postgres import LocalPostgres, PostgresError  # noqa: PLC0415

            try:
                database = LocalPostgres().start()
                url = database.create_database("dmds")
            except PostgresError as exc:
                print(f"dmds cluster: {exc}", file=sys.stderr)
                return 1
        if args.soap_port:
            log = workdir / "soap.log"
            soap = _child([sys.executable, "-m", "dmds.cli.main", "ws", "--host", args.host,
                           "--port", str(args.soap_port)], log)  # fmt: skip
            procs.append(soap)
            _wait_listening(soap, args.host, [args.soap_port], log)
        rows = []
        for i in range(args.nodes):
            classic = args.base_port + PORTS_PER_NODE * i
            ports = [classic, classic + 1, classic + 2]
            log = workdir / f"node{i + 1}.log"
            node = _child([
                sys.executable, "-m", "dmds.cli.main", "serve", "--store", url, "--node-id", f"node{i + 1}",
                "--host", args.host, "--port", str(ports[0]), "--session-host", args.host,
                "--session-port", str(ports[1]), "--web-host", args.host, "--web-port", str(ports[2]),
                "--admin-port", "0", "--log-level", "INFO", *extra,
            ], log)  # fmt: skip
            procs.append(node)
            try:
                _wait_listening(node, args.host, ports, log)
            except RuntimeError as exc:
                print(f"dmds cluster: node{i + 1} {exc}", file=sys.stderr)
                return 1
            rows.append((f"node{i + 1}", *ports, log))
        _print_guide(args, url, database is not None, rows)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print(f"dmds cluster: a child exited; see its log in {workdir}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndmds cluster: stopping", file=sys.stderr)
        clean = True
        return 0
    except RuntimeError as exc:
        print(f"dmds cluster: the SOAP normaliser {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave nodes or the database behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(procs)
        if database is not None:
            database.stop()
        if clean:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"dmds cluster: logs kept in {workdir}", file=sys.stderr)


def _print_guide(args: argparse.Namespace, url: str, throwaway: bool, rows: list[tuple[Any, ...]]) -> None:
    from dmds.stores.postgresql.engine import redact  # noqa: PLC0415

    kept = "thrown away at exit" if throwaway else "kept"
    print(f"dmds cluster: {len(rows)} node(s) on one PostgreSQL store, {redact(url)} ({kept})")
    print(f"  {'node':6} {'classic':>7} {'session':>7}  web client / WebSocket      log")
    for name, classic, session, web, log in rows:
        print(f"  {name:6} {classic:>7} {session:>7}  ws://{args.host}:{web}/session  {log}")
    if args.soap_port:
        print(f"SOAP normaliser: http://{args.host}:{args.soap_port}/?wsdl")
    sessions = ",".join(f"{args.host}:{row[2]}" for row in rows)
    ws = (
        f" --ws http://{args.host}:{args.soap_port}/?wsdl"
        if args.soap_port and args.soap_port != 5000
        else ""
    )
    print("Point clients at any node; a user on one node talks to users on the others:")
    print(f"  dmds client -s {args.host} -p {rows[0][1]}{ws}               classic protocol, node1")
    print(f"  dmds client --session -s {sessions}{ws}   session protocol, tries each node in turn")
    print(f"  dmds gui --session -s {sessions}{ws}")
    print("Ctrl-C stops everything.", flush=True)
