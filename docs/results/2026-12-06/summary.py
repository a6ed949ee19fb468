"""Medians of the runs nodes.sh wrote: rate, CPU per message of the dmds nodes and of PostgreSQL,
and how many of the machine's cores the run kept busy (nodes + database + generator)."""

import json
import statistics
import sys
from pathlib import Path
from typing import Any

DASH = "\N{EN DASH}"


def row(workload: str, name: str, runs: list[dict[str, Any]]) -> str:
    def per_message(key: str) -> str:
        if not all(key in r or key in r["extra"] for r in runs):
            return DASH
        values = [r.get(key, r["extra"].get(key)) / r["count"] * 1e6 for r in runs]
        return f"{statistics.median(values):.0f} µs"

    rates = [r["rate"] for r in runs]
    busy = statistics.median(
        (r["server_cpu_s"] + r["extra"].get("database_cpu_s", 0.0) + r["generator_cpu_s"]) / r["seconds"]
        for r in runs
    )
    seconds = statistics.median(r["seconds"] for r in runs)
    rate = f"{statistics.median(rates):,.0f} ({min(rates):,.0f}{DASH}{max(rates):,.0f})"
    cpu = f"{per_message('server_cpu_s')} | {per_message('database_cpu_s')}"
    return f"| {workload} | {name} | {rate} | {seconds:.2f} | {cpu} | {busy:.2f} |"


def main(here: Path) -> None:
    print(
        f"| workload | store, nodes | msg/s, median (min{DASH}max) | seconds | dmds CPU/msg"
        " | PostgreSQL CPU/msg | cores busy |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for workload in ("send", "queue"):
        for config in ("sqlite", "1", "2", "3"):
            paths = sorted(here.glob(f"{workload}-{config}-*.json"))
            runs = [json.loads(p.read_text())["runs"][0] for p in paths]
            if runs:
                name = "SQLite, 1" if config == "sqlite" else f"PostgreSQL, {config}"
                print(row(workload, name, runs))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
