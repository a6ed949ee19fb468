#!/usr/bin/env bash
# Issue 12: today's durable path against an earlier commit, built side by side and interleaved,
# with the references (the minimal relay, Mosquitto, NATS JetStream) in the same rounds.
# Usage: bash docs/results/2026-12-06/issue12/compare.sh OUT_DIR PREVIOUS_COMMIT [ROUNDS]
#        (from the repository, after `make install system-deps`); then
#        python docs/results/2026-12-06/issue12/summary.py OUT_DIR
set -euo pipefail
out=$(realpath -m "${1:?output directory}")
prev=${2:?the commit to compare with}
rounds=${3:-3}
mkdir -p "$out"
tree=$(mktemp -d)
git worktree add -f "$tree" "$prev" -q
trap 'git worktree remove --force "$tree"' EXIT
py=$PWD/.venv/bin/python
for round in $(seq "$rounds"); do
  for build in prev new; do
    if [ "$build" = prev ]; then src=$tree/src; refs=(); else src=$PWD/src; refs=(--relay --mqtt --nats); fi
    PYTHONPATH=$src $py -m dmds.cli.main bench send --protocol session --messages 20000 "${refs[@]}" \
      --json "$out/send-$build-$round.json"
    PYTHONPATH=$src $py -m dmds.cli.main bench queue --protocol session --messages 10000 "${refs[@]}" \
      --json "$out/queue-$build-$round.json"
  done
done
