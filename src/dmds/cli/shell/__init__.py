"""The interactive command-line client of dmds: `dmds client` (classic protocol, `classic`) and
`dmds client --session` (session protocol, `session`), both on the machinery of `base`; `run` reads
their commands from a terminal (with `history` and `completion`) or from a script."""

from __future__ import annotations

from dmds.cli.shell.base import DRAIN_MAX_S, DRAIN_QUIET_S
from dmds.cli.shell.classic import USAGE, ClassicShell
from dmds.cli.shell.run import run_client, run_session_client
from dmds.cli.shell.session import SESSION_USAGE, SessionShell

__all__ = [
    "DRAIN_MAX_S",
    "DRAIN_QUIET_S",
    "SESSION_USAGE",
    "USAGE",
    "ClassicShell",
    "SessionShell",
    "run_client",
    "run_session_client",
]
