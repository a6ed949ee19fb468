"""What every `dmds bench` workload shares: results as JSON, the machine, fsync time, CPU, progress.

A workload module exposes `add_parser(subparsers)`; its handler builds a `Result` of one or more
`Run`s (one per repetition, one per system compared side by side) and hands it to `finish`, which
prints the table and writes the JSON that `dmds bench report` reads.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Writes timed by `fsync_ms`, each followed by an fsync.
FSYNC_SAMPLES = 50

console = Console(stderr=True)


@dataclass
class Run:
    """One measured repetition of a workload against one system."""

    system: str  # what was measured: "dmds --sync full", "mosquitto 2.0", "baseline"...
    count: int  # operations completed and checked (messages, requests, connections)
    seconds: float
    server_cpu_s: float | None = None
    generator_cpu_s: float | None = None
    errors: int = 0
    latency_ms: dict[str, float] | None = None  # p50, p90, p99, max
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Result:
    workload: str  # "register", "send", "queue", "connections", "mqtt-send", ...
    params: dict[str, Any]
    runs: list[Run]
    checked: str  # what the run verified, in words
    fsync_ms: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = ""

    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.runs))

    def median_rate(self, system: str) -> float:
        return statistics.median(r.rate for r in self.runs if r.system == system)

    def median_seconds(self, system: str) -> float:
        return statistics.median(r.seconds for r in self.runs if r.system == system)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for run, raw in zip(self.runs, data["runs"], strict=True):
            raw["rate"] = run.rate
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        runs = [Run(**{k: v for k, v in r.items() if k != "rate"}) for r in data["runs"]]
        return cls(**{**data, "runs": runs})


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, CPU model, Python, SQLite."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
    }


def fsync_ms(directory: Path | None = None, samples: int = FSYNC_SAMPLES) -> float:
    """Median time of a 4 KiB write plus fsync in `directory`: what one durable commit waits for."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix="dmds-fsync-") as handle:
        fd = handle.fileno()
        times = []
        block = b"x" * 4096
        for _ in range(samples):
            os.write(fd, block)
            start = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def own_cpu_seconds(*, me: bool = True, children: bool = True) -> float:
    """CPU time of this process and/or its finished children: the generator's side."""
    who = [resource.RUSAGE_SELF] * me + [resource.RUSAGE_CHILDREN] * children
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


def percentiles(samples_s: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max in milliseconds of latencies given in seconds."""
    if not samples_s:
        return None
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] * 1000}


@contextmanager
def progress(description: str, total: int) -> Iterator[Progress]:
    """A rich progress bar on stderr; the workload calls `bar.advance(task)` as work completes."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar


def table(result: Result) -> str:
    """A plain-text table of every run, then the medians per system."""
    lines = [
        f"{result.workload}: {', '.join(f'{k}={v}' for k, v in result.params.items())}",
        f"checked: {result.checked}",
    ]
    if result.fsync_ms is not None:
        lines.append(f"fsync (4 KiB write + fsync, median): {result.fsync_ms:.3f} ms")
    width = max([32, *(len(r.system) + 1 for r in result.runs)])
    lines.append(
        f"{'system':{width}} {'count':>8} {'seconds':>8} {'rate/s':>9} {'server CPU':>10} {'gen CPU':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for r in result.runs:

        def share(cpu: float | None, seconds: float = r.seconds) -> str:
            return f"{cpu / seconds:.0%}" if cpu is not None and seconds > 0 else "-"

        lat = r.latency_ms or {}
        p50 = f"{lat['p50']:.2f}" if "p50" in lat else "-"
        p99 = f"{lat['p99']:.2f}" if "p99" in lat else "-"
        lines.append(
            f"{r.system:{width}} {r.count:8d} {r.seconds:8.3f} {r.rate:9.0f} {share(r.server_cpu_s):>10}"
            f" {share(r.generator_cpu_s):>8} {p50:>7} {p99:>7} {r.errors:6d}"
        )
    systems = result.systems()
    if len(result.runs) > len(systems):
        lines.append("medians:")
        for system in systems:
            lines.append(
                f"  {system:{width - 2}} {result.median_rate(system):9.0f}/s"
                f"  {result.median_seconds(system):.3f} s"
            )
    return "\n".join(lines)


def finish(result: Result, json_path: Path | None) -> int:
    """Print the table; write the JSON if asked. Returns the exit code: 1 if any run had errors."""
    result.machine = result.machine or machine()
    result.started = result.started or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(table(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        console.print(f"wrote {json_path}")
    return 1 if any(r.errors for r in result.runs) else 0


def load(path: Path) -> Result:
    return Result.from_json(json.loads(path.read_text()))


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
