"""The long form: each target fuzzed by libFuzzer in a subprocess (`run_fuzz`), or in this one (`fuzz`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from dmds.bench.fuzz.rule import MAX_LEN, SELF_CHECK, TARGETS
from dmds.bench.fuzz.seeds import write_inputs
from dmds.bench.fuzz.targets import target_function

_CRASH_PREFIXES: Final = ("crash-", "timeout-", "oom-", "leak-")


def _last_int(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def _run_target(
    target: str, runs: int, seed: int, directory: Path, timeout_s: float | None
) -> dict[str, Any]:
    corpus, tokens = write_inputs(target, directory)
    artifacts = directory / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log = directory / "fuzz.log"
    command = [
        sys.executable,
        "-m",
        "dmds.bench.fuzz",
        target,
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={MAX_LEN[target]}",
        f"-dict={tokens}",
        f"-artifact_prefix={artifacts}{os.sep}",
        "-timeout=60",  # a single input running this long is a hang: reported as timeout-*
        "-print_final_stats=1",
        str(corpus),
    ]
    env = dict(os.environ)
    # The child imports this package: make it importable even when it is not installed.
    source = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    exit_code: int | None
    with log.open("w") as out:
        try:
            exit_code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            exit_code = None
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    crash_files = sorted(str(p) for p in artifacts.iterdir() if p.name.startswith(_CRASH_PREFIXES))
    # A child that died without writing an input (failed import, killed, out of time) still counts:
    # nothing may be swallowed.
    crashes = len(crash_files) or int(exit_code != 0)
    return {
        # The final stats, or else the last status line ("#123  NEW cov: ...") of a run cut short.
        "inputs": _last_int(r"stat::number_of_executed_units:\s*(\d+)", text)
        or _last_int(r"(?m)^#(\d+)\s", text)
        or 0,
        "crashes": crashes,
        "crash_files": crash_files,
        "seconds": round(seconds, 2),
        "coverage": _last_int(r"\bcov: (\d+)", text),
        "features": _last_int(r"\bft: (\d+)", text),
        "corpus_units": _last_int(r"\bcorp: (\d+)/", text),
        "exit_code": exit_code,
        "log": str(log),
    }


def run_fuzz(
    runs: int,
    seed: int,
    *,
    targets: Sequence[str] = TARGETS,
    workdir: Path | None = None,
    timeout_s: float | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fuzz each target for `runs` inputs from `seed`, one subprocess after another, and count.

    Returns ``{"runs", "seed", "inputs", "crashes", "seconds", "workdir", "targets": {name: {...}}}``.
    Each target's dict holds inputs as atheris counts them, crashes with the paths of their inputs
    (replay one with ``python -m dmds.bench.fuzz TARGET FILE``), seconds, the coverage and feature
    counts libFuzzer printed last, the exit code and the log. Without `workdir` a temporary one is
    used, and removed only if no target crashed. `progress` is called after each target."""
    unknown = [t for t in targets if t not in MAX_LEN]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; the targets: {', '.join((*TARGETS, SELF_CHECK))}")
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="dmds-fuzz-"))
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for target in targets:
        results[target] = _run_target(target, runs, seed, root / target, timeout_s)
        if progress is not None:
            progress(target, results[target])
    crashes = sum(r["crashes"] for r in results.values())
    keep = workdir is not None or crashes > 0
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "runs": runs,
        "seed": seed,
        "inputs": sum(r["inputs"] for r in results.values()),
        "crashes": crashes,
        "seconds": round(time.monotonic() - started, 2),
        "workdir": str(root) if keep else None,
        "targets": results,
    }


def fuzz(target: str, options: list[str]) -> None:
    """Fuzz `target` in this process with libFuzzer's `options`. atheris.Fuzz() exits the process."""
    import atheris  # noqa: PLC0415 - only the fuzzing child needs libFuzzer

    if target not in MAX_LEN:
        raise ValueError(f"unknown target {target!r}")
    with atheris.instrument_imports(include=["dmds.protocols", "dmds.soap", "dmds.errors", "soapbar"]):
        test_one_input = target_function(target)
    if target == SELF_CHECK:
        # Its bug is in this module, which is not instrumented: give the fuzzer coverage to climb.
        test_one_input = atheris.instrument_func(test_one_input)
    if not any(not o.startswith("-") for o in options):
        # No corpus named: start from the seeds, in a directory left behind with what was found.
        directory = Path(tempfile.mkdtemp(prefix=f"dmds-fuzz-{target}-"))
        corpus, tokens = write_inputs(target, directory)
        extra = [] if any(o.startswith("-dict=") for o in options) else [f"-dict={tokens}"]
        options = [*options, *extra, str(corpus)]
        print(f"dmds fuzz: corpus in {corpus}", file=sys.stderr)
    if not any(o.startswith("-max_len=") for o in options):
        options = [f"-max_len={MAX_LEN[target]}", *options]
    atheris.Setup([sys.argv[0], *options], test_one_input)
    atheris.Fuzz()


def option(options: Sequence[str], name: str, default: int) -> int:
    for option in options:
        if option.startswith(f"-{name}="):
            return int(option.partition("=")[2])
    return default
