#!/usr/bin/env bash
# Forwarded small malloc+free, ns per pair: native against tibet-run, in one run.
# Usage: bench/scripts/malloc.sh [markdown-output]      (needs scripts/build.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-}
[ -x out/bin/tibet-run ] || { echo "malloc.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }
bin=$(mktemp -d)/malloc_bench
gcc -O2 -o "$bin" bench/native/malloc_bench.c
native=$("$bin" | awk '{print $2}')
tibet=$(out/bin/tibet-run -- "$bin" | awk '{print $2}')
ratio=$(awk -v a="$tibet" -v b="$native" 'BEGIN { printf "%.3f", a / b }')
report=$(cat <<REPORT
# Forwarded small malloc+free, $(date -u '+%Y-%m-%d %H:%M UTC')

Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), nproc $(nproc).
Sizes 16..1039 bytes (below the redirection threshold), best of 5 rounds of 20M pairs.

| run | ns per malloc+free | x native |
|---|--:|--:|
| native | $native | 1.000 |
| tibet-run | $tibet | $ratio |
REPORT
)
echo "$report"
[ -z "$out" ] || echo "$report" > "$out"
