#!/usr/bin/env bash
# One SQLite node against 1, 2 and 3 nodes on one throw-away PostgreSQL, interleaved so that the
# machine's drift falls on every configuration alike: three rounds, one run of each per round.
# Usage: bash docs/results/2026-12-06/nodes.sh OUT_DIR   (from the repository, after `make install`)
set -euo pipefail
out=${1:?output directory}
mkdir -p "$out"
dmds=.venv/bin/dmds
for round in 1 2 3; do
  for cfg in sqlite 1 2 3; do
    if [ "$cfg" = sqlite ]; then store=(); else store=(--store local --nodes "$cfg"); fi
    $dmds bench send --protocol session --pairs 6 --messages 2000 "${store[@]}" \
      --json "$out/send-$cfg-$round.json"
    $dmds bench queue --protocol session --messages 10000 "${store[@]}" \
      --json "$out/queue-$cfg-$round.json"
  done
done
