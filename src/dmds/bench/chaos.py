"""`dmds bench chaos`: the reliability proof, in up to three parts (`--part`, default all):

- kill (`killloop.py`): SIGKILL the server `--kills` times under load from both protocols, restart it
  on the same data dir, then count every acknowledged message: delivered exactly once, in order,
  with the receipts the protocols promise. With `--nodes N` (and `--store`), N nodes on one
  PostgreSQL, a random one killed each time; `--kill-db` kills the database every third time;
- flood (`flood.py`): `--flood-connections` hostile connections on both ports while two pairs talk;
  the pairs lose nothing, the server stays up, its memory stays under a bound from its limits;
- fuzz: `dmds.bench.fuzz.run_fuzz(runs, seed)` (atheris), when that module is installed.

Prints the counts of each part and writes them as JSON with `--json`. Exit code 0 when every part
that ran is clean. Each part is bounded in count and in time; its server runs on 127.0.0.1 on a
temporary data dir, kept (and named) only when the part failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from dmds.bench import common
from dmds.bench.flood import FloodConfig, flood
from dmds.bench.killloop import KillLoopConfig, kill_loop

#: Counts printed first, in this order (the rest follow as they come).
_FIRST = (
    "ok", "kills", "hostile_connections", "acknowledged", "acknowledged_session", "acknowledged_classic",
    "delivered", "losses", "duplicates", "redelivered", "in_doubt", "in_doubt_delivered",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    parts = list(dict.fromkeys(args.part or ["kill", "fuzz", "flood"]))
    seed = args.seed if args.seed is not None else int(time.time())
    report: dict[str, Any] = {
        "workload": "chaos",
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine(),
        "parts": {},
    }
    ok = True
    for part in parts:
        if part == "kill":
            counts = _with_workdir("kill", lambda d: _kill(args, seed, d))
        elif part == "flood":
            counts = _with_workdir("flood", lambda d: _flood(args.flood_connections, seed, d))
        else:
            counts = _fuzz(args.fuzz_runs, seed)
        report["parts"][part] = counts
        ok = ok and bool(counts.get("ok", True))
        print(_text(part, counts), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        common.console.print(f"wrote {args.json}")
    return 0 if ok else 1


def _with_workdir(part: str, body: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"dmds-chaos-{part}-"))
    counts = body(workdir)
    if counts.get("ok"):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        counts["kept"] = str(workdir)  # the server's log and data, to see what happened
    return counts


def _kill(args: argparse.Namespace, seed: int, workdir: Path) -> dict[str, Any]:
    """One node on SQLite; or `--nodes` on PostgreSQL (`--store`; a throw-away server, which
    `--kill-db` also kills now and then)."""
    store = args.store or ("local" if args.nodes > 1 or args.kill_db else "")
    if args.kill_db and store != "local":
        raise SystemExit("--kill-db kills a database the bench starts: use --store local")
    with contextlib.ExitStack() as stack:
        url, database = "", None
        if store:
            from dmds.bench import postgres  # noqa: PLC0415 - asyncpg only when asked

            url, database = stack.enter_context(postgres.database(store, workdir))
        with common.progress("kill loop: SIGKILLs", args.kills) as bar:
            task = bar.task_ids[0]
            cfg = KillLoopConfig(
                kills=args.kills, seed=seed, workdir=workdir, on_kill=lambda: bar.advance(task),
                nodes=args.nodes, store=url, database=database if args.kill_db else None,
            )  # fmt: skip
            return uvloop.run(kill_loop(cfg))


def _flood(connections: int, seed: int, workdir: Path) -> dict[str, Any]:
    with common.progress("flood: hostile connections", connections) as bar:
        task = bar.task_ids[0]
        cfg = FloodConfig(
            connections=connections,
            seed=seed,
            workdir=workdir,
            concurrency=min(1000, connections),
            on_connection=lambda: bar.advance(task),
        )
        return uvloop.run(flood(cfg))


def _fuzz(runs: int, seed: int) -> dict[str, Any]:
    """The fuzzing part lives in `dmds.bench.fuzz` (atheris), written separately: used if present.
    Imported here only: atheris is an optional dependency (`dmds[bench]`)."""
    try:
        module = importlib.import_module("dmds.bench.fuzz")
    except ImportError as exc:
        return {"skipped": f"dmds.bench.fuzz is not available ({exc})"}
    run_fuzz: Callable[[int, int], dict[str, Any]] = module.run_fuzz
    counts = run_fuzz(runs, seed)
    return {"ok": not counts.get("crashes"), **counts}


def _text(part: str, counts: dict[str, Any]) -> str:
    lines = [f"chaos {part}:"]
    keys = [k for k in _FIRST if k in counts] + [k for k in counts if k not in _FIRST]
    for key in keys:
        value = counts[key]
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k}: {v}" for k, v in value.items()]
        elif isinstance(value, list) and key == "problems":
            lines += [f"  problem: {p}" for p in value]
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
