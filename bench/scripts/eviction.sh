#!/usr/bin/env bash
# Hit rates of the eviction policies (tibet-bench eviction), as JSON, Markdown and a PNG plot.
# Usage: bench/scripts/eviction.sh bench/results/$(date +%F)-eviction
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: eviction.sh OUTPUT-PREFIX}
command -v gnuplot >/dev/null || { echo "eviction.sh: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
[ -x out/bin/tibet-bench ] || { echo "eviction.sh: out/bin/tibet-bench is missing; run scripts/build.sh" >&2; exit 1; }
out/bin/tibet-bench eviction --json "$prefix.json" --markdown "$prefix.md"
python3 - "$prefix" <<'PY'
import json, sys
data = json.load(open(sys.argv[1] + ".json"))
rows = {}
for r in data["rows"]:
    key = f'{r["pattern"]} {r["pages"] // data["budgetPages"]}x'
    rows.setdefault(key, {"optimal": r["optimalHitRate"]})[r["policy"]] = r["hitRate"]
with open(sys.argv[1] + ".dat", "w") as f:
    for i, (key, r) in enumerate(rows.items()):
        f.write(f'{i} "{key}" {r["fifo"]} {r["scan-resistant"]} {r["optimal"]}\n')
PY
gnuplot <<GP
set terminal pngcairo size 900,480
set output "$prefix.png"
set title "Eviction policies: hit rate by access pattern and working set (× budget)"
set ylabel "hit rate"
set yrange [0:1]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.7
set key top left
plot "$prefix.dat" using 3:xtic(2) title "fifo", "" using 4 title "scan-resistant", "" using 5 title "optimum"
GP
rm -f "$prefix.dat"
