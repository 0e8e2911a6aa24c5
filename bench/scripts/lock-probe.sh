#!/usr/bin/env bash
# Issue 11: how long a program thread's large malloc + free waits (it takes the engine's
# lock: an arena each time, with --serve program, whose engine serves the model map too)
# while another thread touches a model map (bench/native/lock_probe.c): for the first time
# with a cold page cache (the file read), and four times under a budget of half the model
# (from the second pass on, ranges and runs decrypted from their sealed copies); natively,
# under tibet-run, and under a baseline tibet-run when TIBET_BENCH_BASELINE names one (say a
# build of an older commit), rounds interleaved, medians kept. Every run of a scenario must
# read the same checksum. A third scenario writes anonymous memory instead (lock_probe --anon):
# twice the budget, three passes, so that every eviction encrypts written pages.
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/lock-probe.sh bench/results/$(date +%F)-lock-probe
# Environment: TIBET_BENCH_ROUNDS (default 5), TIBET_BENCH_BASELINE (a tibet-run to compare with),
#              TIBET_BENCH_BASELINE_NAME (how to name it, say the commit it was built from).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: lock-probe.sh OUTPUT-PREFIX}
rounds=${TIBET_BENCH_ROUNDS:-5}
baseline=${TIBET_BENCH_BASELINE:-}
baseline_name=${TIBET_BENCH_BASELINE_NAME:-$baseline}
for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "lock-probe.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "lock-probe.sh: out/bin/tibet-run is missing: run scripts/build.sh" >&2; exit 1; }
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "lock-probe.sh: TIBET_BENCH_BASELINE=$baseline is not an executable tibet-run" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "lock-probe.sh: must run as root (it drops the page cache before each run)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -pthread -o "$work/lock_probe" bench/native/lock_probe.c
out/bin/tibet-gguf-gen --out "$work/model.gguf" --preset medium > /dev/null
half=$(( $(stat -c %s "$work/model.gguf") / 2 / 1048576 ))M
anon_mib=128
run() { # config passes command-prefix...
  local config=$1 passes=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches
  echo "{\"config\": \"$config\", \"scenario\": \"model\", \"passes\": $passes, \"result\": $("$@" "$work/lock_probe" "$work/model.gguf" "$passes")}"
}
run_anon() { # config command-prefix...
  local config=$1; shift
  echo "{\"config\": \"$config\", \"scenario\": \"anon\", \"passes\": 3, \"result\": $("$@" "$work/lock_probe" --anon "$anon_mib" 3)}"
}
{
  for round in $(seq "$rounds"); do
    # Which of tibet-run and the baseline runs first alternates: the first run after the
    # native one was seen reading the cold model three times slower, whichever it was.
    builds=(out/bin/tibet-run); names=(tibet-run)
    [ -z "$baseline" ] || { builds+=("$baseline"); names+=(baseline); }
    if (( round % 2 == 0 )) && [ -n "$baseline" ]; then builds=("${builds[1]}" "${builds[0]}"); names=("${names[1]}" "${names[0]}"); fi
    run native 1 env
    for i in "${!builds[@]}"; do run "${names[i]}" 1 "${builds[i]}" -q --serve program --budget 512M --; done
    run "native, 4 passes" 4 env
    for i in "${!builds[@]}"; do run "${names[i]}, half budget, 4 passes" 4 "${builds[i]}" -q --serve program --budget "$half" --; done
    run_anon "native, writing 128 MiB" env
    for i in "${!builds[@]}"; do run_anon "${names[i]}, writing 128 MiB, budget 64M" "${builds[i]}" -q --serve program --budget 64M --; done
  done
} > "$work/runs.jsonl"

python3 - "$prefix" "$work" "$rounds" "$baseline_name" <<'PY'
import json, platform, subprocess, sys, datetime, statistics
prefix, work, rounds, baseline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = [json.loads(l) for l in open(f"{work}/runs.jsonl")]
for kind in {(r["scenario"], r["passes"]) for r in runs}:
    assert len({r["result"]["checksum"] for r in runs if (r["scenario"], r["passes"]) == kind}) == 1, "the runs read different bytes"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
configs = [c for c in ("native", "tibet-run", "baseline", "native, 4 passes", "tibet-run, half budget, 4 passes", "baseline, half budget, 4 passes",
                       "native, writing 128 MiB", "tibet-run, writing 128 MiB, budget 64M", "baseline, writing 128 MiB, budget 64M")
           if any(r["config"] == c for r in runs)]
med = {c: {k: statistics.median(r["result"][k] for r in runs if r["config"] == c) for k in ("pairs", "p50Us", "p99Us", "maxUs", "touchMs")} for c in configs}
doc = {"benchmark": "lock-probe", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "machine": {"cpu": cpu, "cpus": subprocess.check_output(["nproc"], text=True).strip(), "kernel": platform.release()},
       "command": f"bench/scripts/lock-probe.sh ({rounds} rounds" + (f", baseline {baseline})" if baseline else ")"),
       "medians": med, "runs": runs}
json.dump(doc, open(prefix + ".json", "w"), indent=1)
lines = [f"# A large malloc + free while another thread touches a model map, {doc['date'][:10]}", "",
         f"Machine: {cpu}, {doc['machine']['cpus']} CPUs, Linux {doc['machine']['kernel']}. A 97 MB GGUF model (tibet-gguf-gen --preset medium) mapped read-only and touched page by page by one thread, page cache dropped first: once, with a budget of 512M (the file read), and four times with a budget of half the model (later passes decrypt what was evicted); "
         f"or, in the rows 'writing 128 MiB', a thread writes every page of a 128 MiB malloc three times, different bytes each pass, under a 64M budget (every eviction encrypts written pages); "
         f"the main thread mallocs and frees 2 MiB every 200 µs meanwhile (under tibet-run --serve program: an arena each time, which takes the engine's lock). Medians of {rounds} interleaved rounds.",
         ("'baseline': " + baseline if baseline else ""), "",
         "| run | pairs timed | malloc+free p50 µs | p99 µs | max µs | touching the model (or writing) ms |", "|---|--:|--:|--:|--:|--:|"]
for c in configs:
    m = med[c]
    lines.append(f"| {c} | {m['pairs']:.0f} | {m['p50Us']:.1f} | {m['p99Us']:.1f} | {m['maxUs']:.1f} | {m['touchMs']:.1f} |")
open(prefix + ".md", "w").write("\n".join(l for l in lines if l is not None) + "\n")
with open(f"{work}/plot.dat", "w") as f:
    for c in configs:
        f.write(f"\"{c}\" {max(med[c]['p50Us'], 0.1)} {max(med[c]['p99Us'], 0.1)}\n")
PY
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$prefix.png"
set title "malloc+free (2 MiB) latency while a model map is touched"
set ylabel "µs (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key outside right top
plot "$work/plot.dat" using 2:xtic(1) title "p50", "" using 3 title "p99"
GP
cat "$prefix.md"
