#!/usr/bin/env bash
# Issue 11, "serving on the faulting CPU": a handler thread per CPU, the one on the
# faulting thread's CPU serving (TIBET_HANDLER_PER_CPU=1), against one handler
# (TIBET_HANDLER_PER_CPU=0, the default), in the same run, rounds interleaved, medians kept:
#  - random single-page reads of a 64 MiB map under an 8M budget (bench/native/random_touch.c:
#    p50/p99 as the program's thread sees them, and reads per second), with the program's own
#    engine (--serve program) and with the custodian;
#  - redis-benchmark SET and GET of 40k x 4 KiB values at a budget of half the data (80M),
#    custodian, beside native Redis;
#  - tibet-bench scaletest of 16384 pages (in-process engine, no budget, AES-256-GCM, random
#    data): sequential MB/s and random p50/p99, with --handler-per-cpu and without.
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/handler-per-cpu.sh bench/results/$(date +%F)-handler-per-cpu
# Environment: TIBET_BENCH_ROUNDS (default 4).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: handler-per-cpu.sh OUTPUT-PREFIX}
rounds=${TIBET_BENCH_ROUNDS:-4}
for tool in gcc gnuplot python3 redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "handler-per-cpu.sh: $tool is missing (apt-get install gcc gnuplot-nox python3 redis-server redis-tools)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "handler-per-cpu.sh: out/bin/tibet-run is missing: run scripts/build.sh" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "handler-per-cpu.sh: needs at least two CPUs (a handler per CPU is off with one)" >&2; exit 1; }

work=$(mktemp -d)
port=7393
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
gcc -O2 -Wall -Wextra -o "$work/random_touch" bench/native/random_touch.c

touch_run() { # per-cpu serve
  echo "{\"bench\": \"random-touch\", \"perCpu\": $1, \"serve\": \"$2\", \"result\": $(TIBET_HANDLER_PER_CPU=$1 out/bin/tibet-run -q --serve "$2" --budget 8M --stats-json "$work/stats.json" -- "$work/random_touch" 40000), \"handovers\": $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['handlerHandovers'])" "$work/stats.json")}"
}
scale_run() { # per-cpu
  local flag=""; [ "$1" = 1 ] && flag=--handler-per-cpu
  out/bin/tibet-bench scaletest --max-pages 16384 --json "$work/scale.json" $flag >/dev/null
  python3 - "$work/scale.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
row = next(r for r in d["summary"]["rows"] if r["memory"] == "tibet, encrypt" and r["cipher"] == "aes-256-gcm")
print(json.dumps({"bench": "scaletest", "perCpu": int(sys.argv[2]), "seqMBps": row["sequentialMegabytesPerSecond"],
                  "p50Us": row["randomP50Microseconds"], "p99Us": row["randomP99Microseconds"]}))
PY
}
redis_run() { # per-cpu (or "native")
  redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
  if [ "$1" = native ]; then
    redis-server --port $port --save '' --appendonly no >/dev/null 2>&1 &
  else
    TIBET_HANDLER_PER_CPU=$1 out/bin/tibet-run -q --budget 80M -- redis-server --port $port --save '' --appendonly no >/dev/null 2>&1 &
  fi
  for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p $port -t set -n 40000 -r 40000 -d 4096 --csv >/dev/null 2>&1 # fill
  local set get
  set=$(redis-benchmark -p $port -t set -n 40000 -r 40000 -d 4096 --csv 2>/dev/null | awk -F'","' 'NR==2 {print $2}')
  get=$(redis-benchmark -p $port -t get -n 40000 -r 40000 -d 4096 --csv 2>/dev/null | awk -F'","' 'NR==2 {print $2}')
  redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
  wait
  echo "{\"bench\": \"redis\", \"perCpu\": \"$1\", \"set\": ${set:-0}, \"get\": ${get:-0}}"
}
{
  for round in $(seq "$rounds"); do
    # Which goes first alternates.
    if (( round % 2 )); then order="1 0"; else order="0 1"; fi
    for serve in program custodian; do for p in $order; do touch_run $p $serve; done; done
    redis_run native
    for p in $order; do redis_run $p; done
    for p in $order; do scale_run $p; done
  done
} > "$work/runs.jsonl"

python3 - "$prefix" "$work" "$rounds" <<'PY'
import json, platform, subprocess, sys, datetime, statistics
prefix, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.loads(l) for l in open(f"{work}/runs.jsonl")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
med = lambda xs: statistics.median(xs)
touch = {}
for serve in ("program", "custodian"):
    for p in (1, 0):
        rs = [r for r in runs if r["bench"] == "random-touch" and r["serve"] == serve and r["perCpu"] == p]
        touch[f"{serve}, {'a handler per CPU' if p else 'one handler'}"] = {
            k: med([r["result"][k] for r in rs]) for k in ("p50Us", "p90Us", "p99Us", "touchesPerSecond")} | {
            "handovers": med([r["handovers"] for r in rs]), "all": [r["result"] for r in rs]}
redis = {}
for p, name in (("native", "native"), ("1", "custodian, a handler per CPU"), ("0", "custodian, one handler")):
    rs = [r for r in runs if r["bench"] == "redis" and r["perCpu"] == p]
    redis[name] = {"set": med([r["set"] for r in rs]), "get": med([r["get"] for r in rs]),
                   "allSet": [r["set"] for r in rs], "allGet": [r["get"] for r in rs]}
scale = {}
for p in (1, 0):
    rs = [r for r in runs if r["bench"] == "scaletest" and r["perCpu"] == p]
    scale["a handler per CPU" if p else "one handler"] = {k: med([r[k] for r in rs]) for k in ("seqMBps", "p50Us", "p99Us")} | {
        "allSeqMBps": [r["seqMBps"] for r in rs], "allP99Us": [r["p99Us"] for r in rs]}
doc = {"benchmark": "handler-per-cpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "machine": {"cpu": cpu, "cpus": subprocess.check_output(["nproc"], text=True).strip(), "kernel": platform.release()},
       "command": f"bench/scripts/handler-per-cpu.sh ({rounds} rounds)", "randomTouch": touch, "redisHalfBudget": redis, "scaletest16384": scale, "runs": runs}
json.dump(doc, open(prefix + ".json", "w"), indent=1)
nat = redis["native"]
lines = [f"# A handler per CPU against one, {doc['date'][:10]}", "",
         f"Machine: {cpu}, {doc['machine']['cpus']} CPUs, Linux {doc['machine']['kernel']}. Medians of {rounds} interleaved rounds "
         "(TIBET_HANDLER_PER_CPU=1 against 0, the default). AES-256-GCM.", "",
         "## Random single-page reads of a 64 MiB map, budget 8M (bench/native/random_touch.c, 40000 reads timed in the program)", "",
         "| run | p50 µs | p90 µs | p99 µs | reads/s | hand-overs |", "|---|--:|--:|--:|--:|--:|"]
for name, m in touch.items():
    lines.append(f"| {name} | {m['p50Us']:.1f} | {m['p90Us']:.1f} | {m['p99Us']:.1f} | {m['touchesPerSecond']:.0f} | {m['handovers']:.0f} |")
lines += ["", "## redis-benchmark, 40k x 4 KiB values, budget 80M (half the data)", "",
          "| run | SET ops/s | × native | GET ops/s | × native |", "|---|--:|--:|--:|--:|"]
for name, m in redis.items():
    lines.append(f"| {name} | {m['set']:.0f} | {m['set'] / nat['set']:.2f} | {m['get']:.0f} | {m['get'] / nat['get']:.2f} |")
lines += ["", "## tibet-bench scaletest, 16384 pages, random data, AES-256-GCM (in-process engine, no budget)", "",
          "| run | sequential MB/s | random p50 µs | random p99 µs | all sequential | all p99 |", "|---|--:|--:|--:|---|---|"]
for name, m in scale.items():
    lines.append(f"| {name} | {m['seqMBps']:.0f} | {m['p50Us']:.1f} | {m['p99Us']:.1f} | {m['allSeqMBps']} | {m['allP99Us']} |")
open(prefix + ".md", "w").write("\n".join(lines) + "\n")
with open(f"{work}/touch.dat", "w") as f:
    for name, m in touch.items():
        f.write(f"\"{name}\" {m['p50Us']} {m['p99Us']}\n")
with open(f"{work}/scale.dat", "w") as f:
    for name, m in scale.items():
        f.write(f"\"{name}\" {m['p50Us']} {m['p99Us']} {m['seqMBps']}\n")
with open(f"{work}/redis.dat", "w") as f:
    for name, m in redis.items():
        f.write(f"\"{name}\" {m['set'] / nat['set']} {m['get'] / nat['get']}\n")
PY
gnuplot <<GP
set terminal pngcairo size 1800,500 noenhanced
set output "$prefix.png"
set multiplot layout 1,3
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key top left
set xtics rotate by -20
set yrange [0:*]
set title "random fault as the program sees it (8M budget)"
set ylabel "µs"
plot "$work/touch.dat" using 2:xtic(1) title "p50", "" using 3 title "p99"
set title "Redis at half budget (custodian)"
set ylabel "× native"
plot "$work/redis.dat" using 2:xtic(1) title "SET", "" using 3 title "GET"
set title "scaletest 16384 pages, in-process: random faults"
set ylabel "µs"
plot "$work/scale.dat" using 2:xtic(1) title "p50", "" using 3 title "p99"
unset multiplot
GP
cat "$prefix.md"
