"""Medians of compare.sh's rounds: rate, seconds and server CPU per message, per build and system."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(folder: Path) -> None:
    table: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        workload, build, _ = path.stem.split("-")
        for run in json.loads(path.read_text())["runs"]:
            system = run["system"] if not run["system"].startswith("dmds") else f"dmds ({build})"
            cpu = run.get("server_cpu_s")
            table[(workload, system)].append(
                {
                    "rate": run["rate"],
                    "seconds": run["seconds"],
                    "us": 1e6 * cpu / run["count"] if cpu else 0.0,
                }
            )
    print("| workload | system | runs | msg/s | seconds | server µs/msg |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (workload, system), runs in sorted(table.items()):
        med = {k: statistics.median(r[k] for r in runs) for k in ("rate", "seconds", "us")}
        figures = f"{med['rate']:,.0f} | {med['seconds']:.3f} | {med['us']:.1f}"
        print(f"| {workload} | {system} | {len(runs)} | {figures} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
