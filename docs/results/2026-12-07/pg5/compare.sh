#!/usr/bin/env bash
# PostgreSQL schema 5 (one row per message, delivery receipts as ranges) against the commit before
# it, built side by side and interleaved: three rounds, one run of each per round, 1 and 2 nodes.
# Each bench command waits for /tmp/dmds-bench.lock, so that no other benchmark on the machine
# overlaps it.
# Both builds are worktrees of their commits (the new one: HEAD), so that editing the sources
# while it runs changes nothing.
# Usage: bash docs/results/2026-12-07/pg5/compare.sh OUT_DIR PREVIOUS_COMMIT [PYTHON]
#        (from the repository, after `make install`); then
#        python docs/results/2026-12-07/pg5/summary.py OUT_DIR
set -euo pipefail
out=$(realpath -m "${1:?output directory}")
prev=${2:?the commit to compare with}
py=${3:-$PWD/.venv/bin/python}
mkdir -p "$out"
tree=$(mktemp -d)
head=$(mktemp -d)
git worktree add -f "$tree" "$prev" -q --detach
git worktree add -f "$head" HEAD -q --detach
trap 'git worktree remove --force "$tree"; git worktree remove --force "$head"' EXIT
echo "new: $(git -C "$head" rev-parse --short HEAD), previous: $(git -C "$tree" rev-parse --short HEAD)"
for round in 1 2 3; do
  for nodes in 1 2; do
    for build in prev new; do
      if [ "$build" = prev ]; then src=$tree/src; else src=$head/src; fi
      PYTHONPATH=$src flock /tmp/dmds-bench.lock $py -m dmds.cli.main bench send --protocol session \
        --pairs 6 --messages 2000 --store local --nodes "$nodes" --json "$out/send-$build$nodes-$round.json"
      PYTHONPATH=$src flock /tmp/dmds-bench.lock $py -m dmds.cli.main bench queue --protocol session \
        --messages 10000 --store local --nodes "$nodes" --json "$out/queue-$build$nodes-$round.json"
    done
  done
done
