"""Each `dmds` sub-command loads what it runs and nothing heavy beside: a server does not pay for the
terminal, the desktop window or the benchmarks, a client does not load the server, and the GUI and the
CLI do not import each other. Checked in real subprocesses with ``-X importtime``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: What some sub-commands need and the others must not pay for.
HEAVY = frozenset(
    {
        "prompt_toolkit",
        "PySide6",
        "rich",
        "zeep",
        "playwright",
        "dmds.bench",
        "dmds.cli.shell",
        "dmds.gui",
        "dmds.transports",
        "dmds.stores",
    }
)
#: What the server must not load once it runs (it has no terminal, window, SOAP client or benchmark).
NOT_FOR_SERVE = frozenset(
    {"prompt_toolkit", "PySide6", "rich", "zeep", "playwright", "dmds.bench", "dmds.gui"}
)
#: What a command-line client must not load once it runs: the server's side.
NOT_FOR_CLIENT = frozenset(
    {
        "dmds.transports",
        "dmds.stores",
        "dmds.core",
        "dmds.web",
        "uvicorn",
        "starlette",
        "PySide6",
        "dmds.bench",
    }
)


def _imported(argv: list[str]) -> set[str]:
    """Every module the Python process started with these arguments imported, by ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        check=False,
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, proc.stderr
    return names


def _loaded(imported: set[str], packages: frozenset[str]) -> list[str]:
    """The `packages` (or modules) of which something was imported."""
    return sorted(p for p in packages if any(name == p or name.startswith(p + ".") for name in imported))


@pytest.mark.parametrize(
    "sub", ["serve", "ws", "client", "gui", "migrate", "store", "backup", "restore", "cluster", "admin"]
)
def test_a_sub_command_help_loads_nothing_heavy(sub: str) -> None:
    assert _loaded(_imported(["-m", "dmds.cli.main", sub, "--help"]), HEAVY) == []


def test_bench_help_loads_the_benchmarks_and_no_client_or_server() -> None:
    imported = _imported(["-m", "dmds.cli.main", "bench", "--help"])
    assert "dmds.bench.cli" in imported
    assert _loaded(imported, HEAVY - {"dmds.bench", "rich"}) == []


def test_serve_runs_without_the_clients_or_the_benchmarks(tmp_path: Path) -> None:
    # A config file that is missing stops `dmds serve` just after it imported what it runs.
    imported = _imported(["-m", "dmds.cli.main", "serve", "--config", str(tmp_path / "missing.toml")])
    assert "dmds.server.lifecycle" in imported
    assert _loaded(imported, NOT_FOR_SERVE) == []


@pytest.mark.parametrize("mode", [[], ["--session"]])
def test_client_runs_without_the_server(mode: list[str]) -> None:
    # No command on stdin: the shell starts, reads the end of input and leaves without connecting.
    imported = _imported(["-m", "dmds.cli.main", "client", *mode, "-p", "9"])
    assert "dmds.cli.shell.run" in imported
    assert _loaded(imported, NOT_FOR_CLIENT) == []


@pytest.mark.skipif(importlib.util.find_spec("PySide6") is None, reason="PySide6 is not installed")
def test_the_gui_does_not_import_the_cli() -> None:
    imported = _imported(["-c", "import dmds.gui.window, dmds.gui.worker, dmds.gui.session_worker"])
    assert "dmds.gui.window" in imported
    assert (
        _loaded(imported, frozenset({"dmds.cli", "prompt_toolkit", "dmds.transports", "dmds.stores"})) == []
    )
