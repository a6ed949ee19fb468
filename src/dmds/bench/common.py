"""What every `dmds bench` workload shares: results as JSON, the machine, fsync time, CPU, progress.

A workload module exposes `add_parser(subparsers)`; its handler builds a `Result` of one or more
`Run`s (one per repetition, one per system compared side by side) and hands it to `finish`, which
prints the table and writes the JSON that `dmds bench report` reads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Writes timed by `fsync_ms`, each followed by an fsync.
FSYNC_SAMPLES = 50
#: Iterations of `calibration_s`'s loop (~0.26 s of CPU on the 2-vCPU bench machine), and its repeats.
CALIBRATION_LOOPS = 1_000_000
CALIBRATION_REPEATS = 3
#: Figures of a Run computed from its fields, added to its JSON and dropped when read back.
_DERIVED = ("rate", "server_cpu_us_per_op")

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

    @property
    def server_cpu_us_per_op(self) -> float | None:
        """The server's CPU per operation counted (per message in send and queue), in µs: unlike
        the rate, it does not depend on what else limited the run (the generator, the window).
        /proc counts CPU in clock ticks (10 ms), so it is within 10 ms / count of the truth."""
        if self.server_cpu_s is None or self.count <= 0:
            return None
        return self.server_cpu_s / self.count * 1e6


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
            raw["server_cpu_us_per_op"] = run.server_cpu_us_per_op
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        runs = [Run(**{k: v for k, v in r.items() if k not in _DERIVED}) for r in data["runs"]]
        return cls(**{**data, "runs": runs})


def _calibration_work(loops: int) -> int:
    """A fixed mix of what the servers and generators spend their time on in Python: int
    arithmetic, str formatting, dict stores and loads. No input, no I/O: the same work every time."""
    table: dict[int, str] = {}
    total = 0
    for i in range(loops):
        key = i & 1023
        table[key] = f"message {i}"
        total += len(table[key]) ^ key
    return total


@functools.cache
def calibration_s(loops: int = CALIBRATION_LOOPS, repeats: int = CALIBRATION_REPEATS) -> float:
    """Seconds of CPU (`time.process_time`) the fixed loop takes, best of `repeats`, once per
    process: how fast this machine runs Python today. Results of different days or machines are
    comparable only in proportion to it: a rate measured with calibration 0.40 s against one with
    0.30 s says the CPU was a third slower, not dmds. CPU time rather than wall time, so that a
    moment of waiting for a busy core does not count; the best of several, so that a cold cache or
    a frequency ramp does not."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        _calibration_work(loops)
        best = min(best, time.process_time() - start)
    return best


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, CPU model, Python, SQLite, and the calibration."""
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
        "calibration_s": round(calibration_s(), 4),
        "calibration_loops": CALIBRATION_LOOPS,
        "calibration_repeats": CALIBRATION_REPEATS,
    }


def machine_line(info: dict[str, Any]) -> str:
    """The machine in one line, with the calibration where the result has one (older JSON has not)."""
    line = (
        f"{info.get('cores')} cores ({info.get('cpu') or 'unknown CPU'}), {info.get('memory_gib')} GiB, "
        f"{info.get('system')}, Python {info.get('python')}, SQLite {info.get('sqlite')}"
    )
    if info.get("calibration_s") is not None:
        loops, repeats = info.get("calibration_loops"), info.get("calibration_repeats")
        line += f"; calibration {info['calibration_s']:.3f} s CPU"
        line += f" ({loops:,} fixed Python loops, best of {repeats}; lower is faster)" if loops else ""
    return line


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


class Checked(Protocol):
    """A part of a reference workload (a client, a receiver) that counts what it found wrong."""

    @property
    def errors(self) -> int: ...

    @property
    def problems(self) -> list[str]: ...


class CpuMeter:
    """CPU over the timed part of a run: the system's under test (`cpu()`, None where unknown) and
    this process's (the generator's)."""

    def __init__(self, cpu: Callable[[], float | None]) -> None:
        self._cpu = cpu
        self.server: float | None = None
        self.generator = 0.0

    def start(self) -> None:
        self.server, self.generator = self._cpu(), own_cpu_seconds()

    def stop(self) -> None:
        server = self._cpu()
        self.server = server - self.server if server is not None and self.server is not None else None
        self.generator = own_cpu_seconds() - self.generator


def checked_run(
    system: str,
    failures: list[str],
    parts: Sequence[Checked],
    *,
    kept: int,
    received: int = 0,
    seconds: float = 0.0,
    meter: CpuMeter | None = None,
    extra: dict[str, Any] | None = None,
) -> Run:
    """The Run of a reference workload: errors count every failure and everything `parts` found
    wrong; the first `kept` of them, in words, go in extra["problems"]."""
    errors = len(failures)
    problems = list(failures)
    for part in parts:
        errors += part.errors
        problems += part.problems
    return Run(
        system=system,
        count=received,
        seconds=seconds,
        server_cpu_s=meter.server if meter is not None else None,
        generator_cpu_s=meter.generator if meter is not None else None,
        errors=errors,
        extra={**(extra or {}), "problems": problems[:kept]},
    )


def latency_ms(arrivals: list[float], sent_at: list[float]) -> dict[str, float] | None:
    """Percentiles of arrival minus send of the same message: both lists by sequence number, from 1."""
    return percentiles([arrived - sent for arrived, sent in zip(arrivals, sent_at, strict=False)])


def run_bounded(
    description: str, total: int, timeout: float, work: Callable[[Progress], Coroutine[Any, Any, Run]]
) -> Run:
    """`work` on a uvloop loop under a progress bar; its set-up (connections, subscriptions) is
    bounded apart from its timed part (`timeout`), by another minute."""
    import uvloop  # noqa: PLC0415 - `dmds --help` imports this module: it stays fast

    with progress(description, total) as bar:
        return uvloop.run(asyncio.wait_for(work(bar), timeout + 60))


def table(result: Result) -> str:
    """A plain-text table of every run, then the medians per system."""
    lines = [
        f"{result.workload}: {', '.join(f'{k}={v}' for k, v in result.params.items())}",
        f"checked: {result.checked}",
    ]
    if result.machine:
        lines.append(f"machine: {machine_line(result.machine)}")
    if result.fsync_ms is not None:
        lines.append(f"fsync (4 KiB write + fsync, median): {result.fsync_ms:.3f} ms")
    width = max([32, *(len(r.system) + 1 for r in result.runs)])
    lines.append(
        f"{'system':{width}} {'count':>8} {'seconds':>8} {'rate/s':>9} {'server CPU':>10} {'srv µs/op':>9}"
        f" {'gen CPU':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for r in result.runs:

        def share(cpu: float | None, seconds: float = r.seconds) -> str:
            return f"{cpu / seconds:.0%}" if cpu is not None and seconds > 0 else "-"

        lat = r.latency_ms or {}
        p50 = f"{lat['p50']:.2f}" if "p50" in lat else "-"
        p99 = f"{lat['p99']:.2f}" if "p99" in lat else "-"
        per_op = f"{r.server_cpu_us_per_op:.1f}" if r.server_cpu_us_per_op is not None else "-"
        lines.append(
            f"{r.system:{width}} {r.count:8d} {r.seconds:8.3f} {r.rate:9.0f} {share(r.server_cpu_s):>10}"
            f" {per_op:>9} {share(r.generator_cpu_s):>8} {p50:>7} {p99:>7} {r.errors:6d}"
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
