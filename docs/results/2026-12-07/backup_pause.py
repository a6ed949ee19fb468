"""How long `dmds backup` of a live store of 200,000 messages takes, and what it does to the latency of
a `dmds bench send` running meanwhile (docs/operations.md, Backups).

Starts `dmds serve` (sync full) on a temporary data dir under /tmp, stores MESSAGES messages with
`dmds bench queue` (stored for an offline user, then drained: they stay as history), then runs
`dmds bench send` ROUNDS times with `dmds backup` started a second into it and ROUNDS times without,
alternating, and prints each run's latency percentiles and each backup's report. Each send run adds
SEND messages to the store: the first backup copies MESSAGES and the first second's sends.
Run under the bench lock: flock /tmp/dmds-bench.lock .venv/bin/python backup_pause.py [STEP_PAGES]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MESSAGES = 200_000
SEND = 150_000  # messages of each bench send run: a few seconds, the backup well inside it
ROUNDS = 2
DMDS = [sys.executable, "-m", "dmds.cli.main"]


def main() -> None:
    step_pages = sys.argv[1] if len(sys.argv) > 1 else "256"
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        data = Path(tmp) / "data"
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen(
            [*DMDS, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", "0",
             "--session-host", "127.0.0.1", "--session-port", "0", "--web-host", "127.0.0.1", "--web-port", "0",
             "--max-send-rate", "0", "--max-stored-messages", str(MESSAGES), "--backup-step-pages", step_pages,
             "--argon2-time-cost", "1", "--argon2-memory-kib", "1024"],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            port = _session_port(Path(tmp) / "server.log")
            bench = [*DMDS, "bench", "queue", "--host", "127.0.0.1", "--port", str(port)]
            subprocess.run(
                [*bench, "--messages", str(MESSAGES)], check=True, timeout=600, capture_output=True
            )
            size = (data / "dmds.sqlite3").stat().st_size + (data / "dmds.sqlite3-wal").stat().st_size
            print(
                f"store: {MESSAGES:,} messages, {size / 1e6:.1f} MB (database and WAL); step {step_pages} pages"
            )
            for n in range(ROUNDS):
                for with_backup in (True, False):
                    print(_round(port, data, Path(tmp) / f"b{n}.sqlite3" if with_backup else None))
        finally:
            server.terminate()
            server.wait(30)


def _round(port: int, data: Path, backup: Path | None) -> str:
    out = data.parent / "send.json"
    send = subprocess.Popen(
        [*DMDS, "bench", "send", "--host", "127.0.0.1", "--port", str(port), "--messages", str(SEND),
         "--json", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    line = "no backup"
    if backup is not None:
        time.sleep(1.0)
        done = subprocess.run(
            [*DMDS, "backup", str(backup), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = done.stdout.strip() or done.stderr.strip()
        if send.poll() is not None:
            line += " (the send run had ended before the backup did)"
    send.wait(600)
    result = json.loads(out.read_text())
    latency = _find(result, "latency_ms")
    return f"send latency ms {json.dumps(latency)}; {line}"


def _find(value: object, key: str) -> object:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for item in value.values():
            if (found := _find(item, key)) is not None:
                return found
    if isinstance(value, list):
        for item in value:
            if (found := _find(item, key)) is not None:
                return found
    return None


def _session_port(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"session server listening on [^ ]+:(\d+)", log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}")


if __name__ == "__main__":
    main()
