#!/bin/bash
# Metrics on and off, interleaved, 3 rounds each (issue 13). Admin on = DMDS_ADMIN_PORT set.
mkdir -p "${OUT:-/tmp/mbench}"
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=$PWD/src
PY=${PY:-.venv/bin/python}
for round in 1 2 3; do
  for mode in off on; do
    if [ $mode = on ]; then export DMDS_ADMIN_PORT=17193; else unset DMDS_ADMIN_PORT; fi
    flock /tmp/dmds-bench.lock timeout 600 $PY -m dmds.cli.main bench send --protocol session --messages 20000 --json ${OUT:-/tmp/mbench}/send-$mode-$round.json > ${OUT:-/tmp/mbench}/send-$mode-$round.txt 2>&1
    flock /tmp/dmds-bench.lock timeout 600 $PY -m dmds.cli.main bench queue --protocol session --messages 10000 --json ${OUT:-/tmp/mbench}/queue-$mode-$round.json > ${OUT:-/tmp/mbench}/queue-$mode-$round.txt 2>&1
  done
done
