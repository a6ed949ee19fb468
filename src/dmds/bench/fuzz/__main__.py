"""`python -m dmds.bench.fuzz`: one target in this process, or `all` in subprocesses (JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from dmds.bench.fuzz.longform import fuzz, option, run_fuzz
from dmds.bench.fuzz.rule import SELF_CHECK, TARGETS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmds.bench.fuzz",
        description="Fuzz the dmds codecs and the SOAP normaliser with atheris (libFuzzer).",
        epilog=(
            "examples:\n"
            "  python -m dmds.bench.fuzz session-server -runs=200000 -seed=1\n"
            "  python -m dmds.bench.fuzz soap -max_total_time=60 CORPUS_DIR\n"
            "  python -m dmds.bench.fuzz classic-server crash-1234abcd   (replay a crash)\n"
            "  python -m dmds.bench.fuzz all -runs=200000 -seed=1   (every target, in subprocesses; JSON)\n"
            "\nThe allowed outcomes per target are in this module's docstring: pydoc dmds.bench.fuzz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=[*TARGETS, SELF_CHECK, "all"], help="what to fuzz")
    parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="libFuzzer options (-runs=N, -seed=S, -max_total_time=S, -help=1...), then corpus "
        "directories or inputs to replay; without a corpus the seeds are written to a temporary one",
    )
    args = parser.parse_args(argv)
    if args.target == "all":
        result = run_fuzz(option(args.options, "runs", 200000), option(args.options, "seed", 1))
        print(json.dumps(result, indent=2))
        return 1 if result["crashes"] else 0
    fuzz(args.target, list(args.options))
    return 0  # not reached: atheris.Fuzz() exits


if __name__ == "__main__":
    sys.exit(main())
