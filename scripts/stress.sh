#!/usr/bin/env bash
# The long stress of the engine under a real program (not part of scripts/test.sh: each
# run takes about ten minutes on 2 vCPUs). Runs tests/integration/native/prog_threads_heavy.c
# under tibet-run with a 4 MiB budget RUNS times (default 6) and reports each run, with the
# engine's count of moves it had to reconcile with the page tables.
# Usage: scripts/stress.sh [RUNS]          (needs scripts/build.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-6}
[ -x out/bin/tibet-run ] || { echo "stress.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -Werror -pthread -o "$work/heavy" tests/integration/native/prog_threads_heavy.c
failed=0
for run in $(seq "$runs"); do
  status=0
  out/bin/tibet-run --threshold 64K --budget 4M --stats-json "$work/stats.json" -- "$work/heavy" 1 > "$work/out.txt" 2>&1 || status=$?
  reconciled=$(grep -o '"movesReconciled": [0-9]*' "$work/stats.json" 2>/dev/null | awk '{print $2}')
  echo "run $run: $(tail -n 1 "$work/out.txt") (exit $status, moves reconciled ${reconciled:-?})"
  [ $status -eq 0 ] || { failed=$((failed + 1)); head -n 20 "$work/out.txt"; }
done
echo "stress: $((runs - failed)) of $runs runs exact"
[ $failed -eq 0 ]
