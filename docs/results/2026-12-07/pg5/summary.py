"""Medians of the runs compare.sh wrote, in the table of ../../2026-12-06/summary.py."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent.parent / "2026-12-06"))
from summary import DASH, row  # noqa: E402

here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
print(
    f"| workload | build, nodes | msg/s, median (min{DASH}max) | seconds | dmds CPU/msg | PostgreSQL CPU/msg | cores busy |"
)
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for workload in ("send", "queue"):
    for config in ("prev1", "new1", "prev2", "new2"):
        runs = [
            json.loads(p.read_text())["runs"][0] for p in sorted(here.glob(f"{workload}-{config}-*.json"))
        ]
        if runs:
            name = f"{'150edf2' if config.startswith('prev') else 'schema 5'}, {config[-1]}"
            print(row(workload, name, runs))
