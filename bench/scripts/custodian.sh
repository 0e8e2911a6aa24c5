#!/usr/bin/env bash
# Issue 12's speed check: the same memory work in the process tibet-run started, served by
# its own engine (--serve program) and by the custodian (--serve custodian, the default),
# and in a forked child of it (always the custodian's), beside native, at budgets of
# 200 %, 50 % and 25 % of the data, rounds interleaved (this VM is noisy).
# The work (bench/native/served_bench.c): malloc, a sequential write and a checked read of
# every page (MB/s), then random single-word touches, each timed (p50, p99 µs).
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/custodian.sh bench/results/$(date +%F)-custodian
# Environment: TIBET_BENCH_MIB (data, default 256), TIBET_BENCH_ROUNDS (default 3),
#              TIBET_BENCH_TOUCHES (random touches, default 100000).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: custodian.sh OUTPUT-PREFIX}
mib=${TIBET_BENCH_MIB:-256}
rounds=${TIBET_BENCH_ROUNDS:-3}
touches=${TIBET_BENCH_TOUCHES:-100000}
for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "custodian.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "custodian.sh: out/bin/tibet-run is missing: run scripts/build.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "custodian.sh: must run as root (userfaultfd)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -o "$work/served_bench" bench/native/served_bench.c
: > "$work/runs.jsonl"
for round in $(seq "$rounds"); do
  echo "{\"round\": $round, \"config\": \"native\", \"result\": $("$work/served_bench" self "$mib" "$touches")}" >> "$work/runs.jsonl"
  for percent in 200 50 25; do
    budget=$((mib * percent / 100))M
    for config in program custodian child; do
      case $config in
        program) serve=program where=self ;;
        custodian) serve=custodian where=self ;;
        child) serve=custodian where=child ;;
      esac
      result=$(out/bin/tibet-run -q --budget "$budget" --serve "$serve" -- "$work/served_bench" "$where" "$mib" "$touches")
      echo "{\"round\": $round, \"config\": \"$config\", \"budgetPercent\": $percent, \"result\": $result}" >> "$work/runs.jsonl"
    done
  done
done

python3 - "$prefix" "$work" "$mib" "$rounds" "$touches" <<'PY'
import json, platform, subprocess, sys, datetime, statistics
prefix, work, mib, rounds, touches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = [json.loads(l) for l in open(f"{work}/runs.jsonl")]
assert all(r["result"]["badPages"] == 0 for r in runs), "a run read wrong bytes"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
def median(config, percent, key):
    values = [r["result"][key] for r in runs if r["config"] == config and r.get("budgetPercent") == percent]
    return statistics.median(values)
native = {k: median("native", None, k) for k in ("writeMBps", "readMBps", "touchP50Us", "touchP99Us")}
rows = []
for percent in (200, 50, 25):
    row = {"budgetPercent": percent}
    for name in ("program", "custodian", "child"):
        row[name] = {k: median(name, percent, k) for k in ("writeMBps", "readMBps", "touchP50Us", "touchP99Us")}
    rows.append(row)
doc = {"benchmark": "custodian", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "machine": {"cpu": cpu, "cpus": subprocess.check_output(["nproc"], text=True).strip(), "kernel": platform.release()},
       "command": f"bench/scripts/custodian.sh (TIBET_BENCH_MIB={mib}, rounds {rounds}, {touches} touches)",
       "dataMiB": mib, "native": native, "medians": rows, "runs": runs}
json.dump(doc, open(prefix + ".json", "w"), indent=1)
lines = [f"# The custodian against the program's own engine, {doc['date'][:10]}", "",
         f"Machine: {cpu}, {doc['machine']['cpus']} CPUs, Linux {doc['machine']['kernel']}. {mib} MiB malloc'd, AES-256-GCM, medians of {rounds} interleaved rounds.",
         "'program': the work in the process tibet-run started, served by its own engine (--serve program); 'custodian': the same, served by the custodian (--serve custodian, the default); 'child': the same work in a forked child, served by the custodian.", "",
         f"Native: write {native['writeMBps']:.0f} MB/s, read {native['readMBps']:.0f} MB/s, touch p50 {native['touchP50Us']:.2f} µs, p99 {native['touchP99Us']:.2f} µs.", "",
         "| budget (of the data) | served | write MB/s | read MB/s | touch p50 µs | touch p99 µs | / program (write, read) |",
         "|--:|---|--:|--:|--:|--:|--:|"]
for row in rows:
    p = row["program"]
    for name in ("program", "custodian", "child"):
        c = row[name]
        ratio = "" if name == "program" else f"{c['writeMBps']/p['writeMBps']:.2f}, {c['readMBps']/p['readMBps']:.2f}"
        lines.append(f"| {row['budgetPercent']} % | {name} | {c['writeMBps']:.0f} | {c['readMBps']:.0f} | {c['touchP50Us']:.2f} | {c['touchP99Us']:.2f} | {ratio} |")
lines += ["", "Every page was checked on the sequential read and on each touch: no run read a wrong byte."]
open(prefix + ".md", "w").write("\n".join(lines) + "\n")
with open(f"{work}/plot.dat", "w") as f:
    for row in rows:
        f.write(f"\"{row['budgetPercent']} %\" {row['program']['writeMBps']} {row['custodian']['writeMBps']} {row['child']['writeMBps']} {row['program']['readMBps']} {row['custodian']['readMBps']} {row['child']['readMBps']}\n")
PY
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$prefix.png"
set title "Sequential MB/s: the program's own engine against the custodian (the program's memory, a forked child's), ${mib} MiB"
set ylabel "MB/s"
set xlabel "resident budget, of the data"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key top right
plot "$work/plot.dat" using 2:xtic(1) title "write, program", "" using 3 title "write, custodian", "" using 4 title "write, child", "" using 5 title "read, program", "" using 6 title "read, custodian", "" using 7 title "read, child"
GP
cat "$prefix.md"
