#!/usr/bin/env bash
# PostgreSQL schema 3 (offers name the item before them; a broken COMMIT is resolved) against the
# commit before it, built side by side and interleaved: three rounds, one run of each per round.
# Usage: bash docs/results/2026-12-06/schema3/compare.sh OUT_DIR PREVIOUS_COMMIT
#        (from the repository, after `make install`)
set -euo pipefail
out=$(realpath -m "${1:?output directory}")
prev=${2:?the commit to compare with}
mkdir -p "$out"
tree=$(mktemp -d)
git worktree add -f "$tree" "$prev" -q
trap 'git worktree remove --force "$tree"' EXIT
py=$PWD/.venv/bin/python
for round in 1 2 3; do
  for nodes in 1 2; do
    for build in prev new; do
      if [ "$build" = prev ]; then src=$tree/src; else src=$PWD/src; fi
      PYTHONPATH=$src $py -m dmds.cli.main bench send --protocol session --pairs 6 --messages 2000 \
        --store local --nodes "$nodes" --json "$out/send-$build$nodes-$round.json"
      PYTHONPATH=$src $py -m dmds.cli.main bench queue --protocol session --messages 10000 \
        --store local --nodes "$nodes" --json "$out/queue-$build$nodes-$round.json"
    done
  done
done
