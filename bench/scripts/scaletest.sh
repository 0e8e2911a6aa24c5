#!/usr/bin/env bash
# Page-by-page reads of sealed arenas (tibet-bench scaletest) with AES-256-GCM and AEGIS-256,
# beside native memory in the same run, as JSON, Markdown and a PNG plot: sequential MB/s
# by arena size, and the random-touch latency (p50, p99) of the largest size against the
# targets, both as the program sees them. Builds nothing: run scripts/build.sh first.
# Usage: bench/scripts/scaletest.sh bench/results/$(date +%F)-scaletest
# Environment: TIBET_BENCH_MAX_PAGES (default 16384), TIBET_BENCH_REPEAT (default 3; the median is kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: scaletest.sh OUTPUT-PREFIX}
max_pages=${TIBET_BENCH_MAX_PAGES:-16384}
repeat=${TIBET_BENCH_REPEAT:-3}
for tool in gnuplot python3; do
  command -v $tool >/dev/null || { echo "scaletest.sh: $tool is missing (apt-get install gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-bench ] || { echo "scaletest.sh: out/bin/tibet-bench is missing; run scripts/build.sh" >&2; exit 1; }
out/bin/tibet-bench scaletest --max-pages "$max_pages" --repeat "$repeat" --json "$prefix.json" --markdown "$prefix.md"

# seq.dat: one line per size: pages, native first touch MB/s, then each cipher's encrypt-only MB/s (random data).
# touch.dat: the largest size's random-touch p50 and p99, native then each cipher.
python3 - "$prefix" <<'PY'
import json, sys
data = json.load(open(sys.argv[1] + ".json"))
ciphers = data["ciphers"]
def mbps(pages, cipher, path):
    return next(r["megabytesPerSecond"] for r in data["rows"] if r["pages"] == pages and r["cipher"] == cipher
                and r["path"] == path and r["order"] == "seq" and r["data"] == ("zeros" if cipher is None else "random"))
with open(sys.argv[1] + ".seq.dat", "w") as f:
    for pages in data["sizes"]:
        f.write(" ".join(str(v) for v in [pages, mbps(pages, None, "native first touch")] + [mbps(pages, c, "encrypt") for c in ciphers]) + "\n")
with open(sys.argv[1] + ".touch.dat", "w") as f:
    for r in data["summary"]["rows"]:
        if r["randomP50Microseconds"] is not None:
            f.write(f'"{r["cipher"] or "native"}" {r["randomP50Microseconds"]} {r["randomP99Microseconds"]}\n')
with open(sys.argv[1] + ".gp", "w") as f:
    f.write(f'ciphers = "{" ".join(ciphers)}"\nlargest = {data["summary"]["pages"]}\n')
PY
gnuplot <<GP
load "$prefix.gp"
set terminal pngcairo size 1200,500 noenhanced
set output "$prefix.png"
set multiplot layout 1,2 title "tibet scaletest: sealed 4 KiB pages read by the program, by cipher, beside native memory (same run)"
set title "sequential reads (through faults and read-ahead)"
set xlabel "arena size (4 KiB pages)"
set ylabel "MB/s (10^6 bytes/s)"
set logscale xy
set key below
set grid
set style data linespoints
plot "$prefix.seq.dat" using 1:2 title "native first touch", \
     for [i=1:words(ciphers)] "" using 1:(column(i + 2)) title word(ciphers, i)." (encrypt)", \
     2000 with lines dashtype 2 title "target 2 GB/s"
unset logscale x
unset grid
set title sprintf("random touch of a sealed page (%d pages), program thread", largest)
set xlabel ""
set ylabel "µs (log scale)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.7
plot "$prefix.touch.dat" using 2:xtic(1) title "p50", "" using 3 title "p99", \
     10 with lines dashtype 2 title "target p50 10 µs", 40 with lines dashtype 3 title "target p99 40 µs"
unset multiplot
GP
rm -f "$prefix.seq.dat" "$prefix.touch.dat" "$prefix.gp"
