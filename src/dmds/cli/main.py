"""`dmds`: one command, one sub-command per program. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dmds import __version__, settings
from dmds.cli import logs
from dmds.errors import StoreError


class _LazyParser(argparse.ArgumentParser):
    """A parser whose arguments are added by `populate` the first time it parses (or prints its help):
    a sub-command whose arguments come from heavy code (the benchmarks) costs the others nothing."""

    populate: Callable[[argparse.ArgumentParser], None] | None = None

    def parse_known_args(  # type: ignore[override]  # one signature for typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.populate is not None:
            populate, self.populate = self.populate, None
            populate(self)
        return super().parse_known_args(args, namespace)


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    from dmds.bench import cli as bench_cli

    scenarios = bench.add_subparsers(dest="scenario", required=True)
    bench_cli.add_parsers(scenarios)


def _setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if log_format == "json":
        # Whatever would otherwise reach stderr as it is would not be a JSON line.
        logging.captureWarnings(True)
        sys.excepthook = lambda kind, value, tb: logging.getLogger("dmds").critical(
            "uncaught exception", exc_info=(kind, value, tb)
        )


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from dmds.server.lifecycle import StartupError, serve

    def load() -> settings.ServeSettings:
        return settings.load(settings.ServeSettings, flags=vars(args), env=os.environ, config=args.config)

    try:
        config = load()
    except ValueError as exc:
        # The settings are not known, but a log collector that asked for JSON still gets JSON.
        wanted = args.log_format or os.environ.get("DMDS_LOG_FORMAT", "")
        if wanted.lower() == "json":
            _setup_logging("ERROR", "json")
            logging.getLogger("dmds").error("dmds serve: %s", exc)
        else:
            print(f"dmds serve: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.server.log_level, config.server.log_format.value)
    try:
        uvloop.run(serve(config, reload=load))
    except (StoreError, StartupError) as exc:
        logging.getLogger("dmds").error("%s", exc)
        return 1
    except OSError as exc:  # the port is taken, the address does not exist...
        logging.getLogger("dmds").error(
            "cannot listen on %s:%d: %s", config.server.host, config.server.port, exc
        )
        return 1
    return 0


def _ws(args: argparse.Namespace) -> int:
    from dmds.soap.service import run_ws

    _setup_logging(args.log_level)
    try:
        run_ws(args.host, args.port)
    except OSError as exc:
        logging.getLogger("dmds").error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


def _client(args: argparse.Namespace) -> int:
    from dmds.cli.shell import run_client, run_session_client

    _setup_logging(args.log_level)
    default_port = 7001 if args.session else 7000
    port: int = default_port if args.port is None else args.port
    if not args.session:
        if args.tls or args.ca_file:
            print("dmds client: --tls and --ca-file need --session", file=sys.stderr)
            return 2
        return run_client(args.server, port, args.ws, listen_host=args.listen_host)
    context = None
    if args.tls or args.ca_file:
        import ssl

        try:
            context = ssl.create_default_context(cafile=args.ca_file)
        except OSError as exc:  # the CA file is missing or not PEM
            print(f"dmds client: cannot use --ca-file {args.ca_file}: {exc}", file=sys.stderr)
            return 2
    return run_session_client(args.server, port, args.ws, ssl_context=context)


def _gui(args: argparse.Namespace) -> int:
    from dmds.gui import run_gui

    _setup_logging(args.log_level)
    mode = "session" if args.session else "classic" if args.classic else None
    return run_gui(args.server, args.port, args.ws, listen_host=args.listen_host, mode=mode)


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    """What `dmds client` and `dmds gui` both take beyond the server's address."""
    parser.add_argument(
        "--listen-host",
        default="0.0.0.0",
        help="address of the push listener opened on CONNECT (default: 0.0.0.0)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default: WARNING)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmds", description="dmds, the Distributed Message Delivery Service"
    )
    parser.add_argument("--version", action="version", version=f"dmds {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyParser)

    serve = sub.add_parser(
        "serve",
        help="run the server (classic protocol, SQLite store)",
        description="Run the dmds server in the foreground. Settings come from flags, DMDS_* environment "
        "variables and an optional TOML file, flags winning.",
    )
    serve.add_argument("--config", type=Path, default=None, help="TOML file of settings, one table per group")
    settings.add_arguments(serve, settings.ServeSettings)
    serve.set_defaults(func=_serve)

    ws = sub.add_parser("ws", help="run the SOAP text normaliser (WSDL at /?wsdl)")
    ws.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    ws.add_argument("--port", type=int, default=5000, help="TCP port (default: 5000)")
    ws.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    ws.set_defaults(func=_ws)

    client = sub.add_parser(
        "client", help="interactive command-line client (classic protocol, or session with --session)"
    )
    client.add_argument(
        "-s",
        "--server",
        default="127.0.0.1",
        help="server host (default: 127.0.0.1); with --session, several nodes as host[:port],host[:port]",
    )
    client.add_argument(
        "-p", "--port", type=int, default=None, help="server port (default: 7000; 7001 with --session)"
    )
    client.add_argument(
        "--session",
        action="store_true",
        help="speak the session protocol (passwords, receipts, presence, history) instead of classic",
    )
    client.add_argument(
        "--tls", action="store_true", help="with --session: TLS, verified against the system's CAs"
    )
    client.add_argument(
        "--ca-file", default=None, help="with --session: TLS, verified against this PEM file of CAs"
    )
    client.add_argument(
        "--ws",
        default="http://127.0.0.1:5000/?wsdl",
        help="WSDL URL of the SOAP normaliser (default: http://127.0.0.1:5000/?wsdl)",
    )
    _add_client_options(client)
    client.set_defaults(func=_client)

    gui = sub.add_parser(
        "gui",
        help="desktop client (Qt), classic protocol or session protocol (--session)",
        description="The desktop client. Protocol, server, port and normaliser URL not given here are "
        "the ones remembered from the last run (the classic protocol, 127.0.0.1, 7000 (7001 for the "
        "session protocol) and http://127.0.0.1:5000/?wsdl the first time).",
    )
    protocol = gui.add_mutually_exclusive_group()
    protocol.add_argument(
        "--session",
        action="store_true",
        help="speak the session protocol: passwords, delivered and read receipts, presence, attachments",
    )
    protocol.add_argument("--classic", action="store_true", help="speak the classic protocol")
    gui.add_argument(
        "-s",
        "--server",
        default=None,
        help="server host (default: as last time); in session mode, several nodes as host[:port],...",
    )
    gui.add_argument(
        "-p",
        "--port",
        type=int,
        default=None,
        help="port of the protocol in use (default: as last time; first 7000 classic, 7001 session)",
    )
    gui.add_argument("--ws", default=None, help="WSDL URL of the SOAP normaliser (default: as last time)")
    _add_client_options(gui)
    gui.set_defaults(func=_gui)

    from dmds.cli import admin, backup, cluster, store_admin

    store_admin.add_parsers(sub)
    backup.add_parsers(sub)
    cluster.add_parser(sub)
    admin.add_parser(sub)

    bench = sub.add_parser("bench", help="measure dmds against baselines on this machine")
    bench.populate = _bench_arguments
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
