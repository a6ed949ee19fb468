"""`dmds bench report`: JSON results (`--json` of every workload) into `report.md` and `report.png`.

One table per workload, merging the runs of every file that measured it: per system, the median
rate with its spread, median seconds, the server's and the generator's CPU as a share of a core,
the server's CPU per operation (µs per message in send and queue), latency percentiles where
measured, and the ratio to the workload's first system (for `register`, the baseline of the same
repetition). The machine section gives each file's CPU calibration (`common.calibration_s`). The
chart has a bar per system and workload: median rate, whiskers from the slowest to the fastest run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
from matplotlib import pyplot as plt

from dmds.bench import common

#: Per-run extras worth a column of their own, where a workload records them (median over runs).
EXTRA_COLUMNS = {
    "bytes_per_connection": ("bytes/conn held", "{:,.0f}"),
    "bytes_per_connection_after_close": ("bytes/conn after close", "{:,.0f}"),
    "fill_rate": ("fill msg/s", "{:,.0f}"),
    "receipts_seconds": ("s to last receipt", "{:.3f}"),
}


#: The whole machine's busy CPU over a run (`servers.Meter`): beside the server's and the generator's,
#: it shows what the kernel and other processes took, i.e. how noisy the run was.
BUSY = "machine_busy_cpu_s"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _share(cpu: float | None, seconds: float) -> float | None:
    return cpu / seconds if cpu is not None and seconds > 0 else None


def _fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return spec.format(value) if value is not None else "-"


def _group(results: list[tuple[Path, common.Result]]) -> dict[str, list[tuple[Path, common.Result]]]:
    groups: dict[str, list[tuple[Path, common.Result]]] = {}
    for path, result in results:
        groups.setdefault(result.workload, []).append((path, result))
    return groups


def _runs(group: list[tuple[Path, common.Result]]) -> dict[str, list[common.Run]]:
    """Runs per system. Files of one workload with different parameters measured different things:
    their systems are then told apart by file name rather than pooled into one median."""
    mixed = any(result.params != group[0][1].params for _, result in group)
    by_system: dict[str, list[common.Run]] = {}
    for path, result in group:
        for run in result.runs:
            by_system.setdefault(f"{run.system} [{path.stem}]" if mixed else run.system, []).append(run)
    return by_system


def _latency(runs: list[common.Run], key: str) -> float | None:
    return _median([r.latency_ms.get(key) if r.latency_ms else None for r in runs])


def _table(workload: str, group: list[tuple[Path, common.Result]]) -> list[str]:
    by_system = _runs(group)
    systems = list(by_system)
    first = statistics.median(r.rate for r in by_system[systems[0]])
    extras = [k for k in EXTRA_COLUMNS if any(k in r.extra for runs in by_system.values() for r in runs)]
    has_latency = any(r.latency_ms for runs in by_system.values() for r in runs)
    has_busy = any(BUSY in r.extra for runs in by_system.values() for r in runs)
    header = ["system", "runs", "median rate/s (min-max)", "median s", "server CPU", "server µs/op"]
    header.append("generator CPU")
    if has_busy:
        header.append("machine busy")
    if has_latency:
        header += ["p50 ms", "p99 ms"]
    header += [EXTRA_COLUMNS[k][0] for k in extras]
    header += ["errors"] + ([f"ratio to {systems[0]}"] if len(systems) > 1 else [])
    lines = [f"## {workload}", ""]
    for path, result in group:
        params = ", ".join(f"{k}={v}" for k, v in result.params.items())
        lines.append(f"- `{path.name}` ({result.started or 'undated'}): {params}")
    checked = list(dict.fromkeys(result.checked for _, result in group))
    lines += [f"- checked: {text}" for text in checked]
    fsyncs = [result.fsync_ms for _, result in group if result.fsync_ms is not None]
    if fsyncs:
        lines.append(f"- fsync (4 KiB write + fsync, median): {statistics.median(fsyncs):.3f} ms")
    lines += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|",
    ]
    for system, runs in by_system.items():
        rates = [r.rate for r in runs]
        rate = statistics.median(rates)
        # Per-repetition ratios where the workload recorded them (register: to that run's baseline).
        ratio = _median([r.extra.get("ratio") for r in runs]) if system != systems[0] else 1.0
        if ratio is None:
            ratio = rate / first if first > 0 else None
        row = [
            system,
            str(len(runs)),
            f"{rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
            f"{statistics.median(r.seconds for r in runs):.3f}",
            _fmt(_median([_share(r.server_cpu_s, r.seconds) for r in runs]), "{:.0%}"),
            _fmt(_median([r.server_cpu_us_per_op for r in runs]), "{:.1f}"),
            _fmt(_median([_share(r.generator_cpu_s, r.seconds) for r in runs]), "{:.0%}"),
        ]
        if has_busy:
            row.append(_fmt(_median([_share(r.extra.get(BUSY), r.seconds) for r in runs]), "{:.0%}"))
        if has_latency:
            row += [_fmt(_latency(runs, "p50")), _fmt(_latency(runs, "p99"))]
        row += [_fmt(_median([r.extra.get(k) for r in runs]), EXTRA_COLUMNS[k][1]) for k in extras]
        row += [str(sum(r.errors for r in runs))] + ([_fmt(ratio)] if len(systems) > 1 else [])
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _machines(results: list[tuple[Path, common.Result]]) -> list[str]:
    """Each machine once; the calibration, measured by every invocation of the bench, per file."""
    lines = ["## Machine", ""]
    seen: list[dict[str, Any]] = []
    calibrations: list[list[tuple[str, float]]] = []
    for path, result in results:
        if not result.machine:
            continue
        fixed = {k: v for k, v in result.machine.items() if not k.startswith("calibration")}
        if fixed not in seen:
            seen.append(fixed)
            calibrations.append([])
        if (seconds := result.machine.get("calibration_s")) is not None:
            calibrations[seen.index(fixed)].append((path.name, seconds))
    for machine, files in zip(seen, calibrations, strict=True):
        lines.append(f"- {common.machine_line(machine)}")
        if files:
            each = ", ".join(f"`{name}` {seconds:.3f} s" for name, seconds in files)
            lines.append(
                f"  - CPU calibration (seconds of a fixed Python loop, lower is faster; rates of different "
                f"days compare in proportion to it): {each}"
            )
    if len(seen) > 1:
        lines.append("- (the results come from more than one machine: compare ratios only)")
    return [*lines, ""]


def _chart(groups: dict[str, list[tuple[Path, common.Result]]], path: Path) -> None:
    panels: list[tuple[str, dict[str, list[float]], str]] = []
    for workload, group in groups.items():
        by_system = _runs(group)
        panels.append((workload, {s: [r.rate for r in runs] for s, runs in by_system.items()}, "per second"))
        memory = {
            s: [r.extra["bytes_per_connection"] for r in runs if "bytes_per_connection" in r.extra]
            for s, runs in by_system.items()
        }
        if any(memory.values()):
            panels.append(
                (f"{workload}: memory", {s: v for s, v in memory.items() if v}, "bytes per connection")
            )
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, values, unit) in zip(axes.flat, panels, strict=False):
        names = list(values)
        medians = [statistics.median(v) for v in values.values()]
        low = [m - min(v) for m, v in zip(medians, values.values(), strict=True)]
        high = [max(v) - m for m, v in zip(medians, values.values(), strict=True)]
        ax.bar(range(len(names)), medians, yerr=[low, high], capsize=6, color="#4878a8")
        ax.set_xticks(range(len(names)), [_wrap(n) for n in names], fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        for x, m in enumerate(medians):
            ax.annotate(f"{m:,.0f}", (x, m), ha="center", va="bottom", fontsize=8)
    fig.suptitle("dmds bench: median over runs, whiskers min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _wrap(name: str, width: int = 18) -> str:
    words, lines, line = name.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def write(results: list[tuple[Path, common.Result]], out: Path) -> tuple[Path, Path]:
    """Write report.md and report.png into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    groups = _group(results)
    lines = [
        "# dmds bench report",
        "",
        "Medians over runs. CPU is a share of one core over the measured time; machine busy is all cores'",
        "busy time (so up to the core count): what it has beyond server and generator is the kernel's and",
        "other processes'.",
        "",
    ]
    for workload, group in groups.items():
        lines += _table(workload, group)
    lines += _machines(results)
    markdown, chart = out / "report.md", out / "report.png"
    markdown.write_text("\n".join(lines) + "\n")
    _chart(groups, chart)
    return markdown, chart


def run(args: argparse.Namespace) -> int:
    results = [(path, common.load(path)) for path in args.results]
    markdown, chart = write(results, args.out)
    common.console.print(f"wrote {markdown} and {chart}")
    return 0
