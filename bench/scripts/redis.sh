#!/usr/bin/env bash
# redis-benchmark SET/GET ops/s: native Redis against Redis under tibet-run, in one run,
# with each page cipher (--cipher) at two budgets: 100 % of the data (native Redis's
# resident size at the end of its run, measured in the same run: the budget is above the data)
# and 50 % of it, and with each server of the program's memory (--serve: the custodian, the
# default, or the program's own engine). Keys of 4 KiB values; each tibet row gives its
# ratio to native and the evictions and decryptions the engines counted (--stats-json).
# Targets (the issue): 50 % budget SET and GET >= 0.5x native; budget above the data >= 0.95x.
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot). Builds nothing: run scripts/build.sh first.
# Usage: bench/scripts/redis.sh bench/results/$(date +%F)-redis
# Environment: TIBET_BENCH_KEYS (default 40000), TIBET_BENCH_REQUESTS (default 40000 per test),
#              TIBET_BENCH_RUNS (default 3, native and tibet interleaved; the median is kept),
#              TIBET_BENCH_CIPHERS (default "aes-256-gcm aegis-256"),
#              TIBET_BENCH_SERVE (default "custodian program").
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: redis.sh OUTPUT-PREFIX}
keys=${TIBET_BENCH_KEYS:-40000}
size=4096
requests=${TIBET_BENCH_REQUESTS:-40000}
runs=${TIBET_BENCH_RUNS:-3}
ciphers=${TIBET_BENCH_CIPHERS:-aes-256-gcm aegis-256}
serves=${TIBET_BENCH_SERVE:-custodian program}
port=7391
work=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for tool in redis-server redis-benchmark redis-cli gnuplot python3; do
  command -v $tool >/dev/null || { echo "redis.sh: $tool is missing (apt-get install redis-server redis-tools gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "redis.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }

ops() { # test -> ops/s from redis-benchmark --csv
  redis-benchmark -p $port -t "$1" -n $requests -r $keys -d $size --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub("\"", "", $2); print $2 }'
}

memory() { # field of INFO memory, in bytes
  redis-cli -p $port info memory | awk -F: -v k="$1" '$1 == k { printf "%d", $2 }'
}

measure() { # config cipher budget-bytes serve command-prefix...   (cipher, budget and serve "-" for native) -> one JSON line
  local config=$1 cipher=$2 budget=$3 serve=$4; shift 4
  rm -f "$work/stats.json"
  "$@" redis-server --port $port --save '' --appendonly no --dir "$work" >"$work/server.log" 2>&1 &
  for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p $port ping >/dev/null 2>&1 || { echo "redis.sh: redis-server ($config $cipher) did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
  redis-benchmark -p $port -t set -n $keys -r $keys -d $size -q >/dev/null 2>&1   # fill
  local used rss set get
  set=$(ops set)
  get=$(ops get)
  # After the tests: the SETs over random keys add keys the fill missed, so Redis holds most here.
  used=$(memory used_memory)
  rss=$(memory used_memory_rss)
  redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
  wait || { echo "redis.sh: redis-server ($config $cipher) exited with status $?:" >&2; cat "$work/server.log" >&2; exit 1; }
  python3 - "$config" "$cipher" "$budget" "$used" "$rss" "$set" "$get" "$work/stats.json" "$serve" <<'PY'
import json, sys
config, cipher, budget, used, rss, set_, get, stats_file, serve = sys.argv[1:]
stats = {}
if cipher != "-":
    # The cipher the engine says it used, so a run that ignored --cipher cannot pass as another.
    stats = json.load(open(stats_file))
    if stats.get("cipher") != cipher:
        sys.exit(f"redis.sh: the run '{config} {cipher}' asked for {cipher}, its statistics name {stats.get('cipher')}")
print(json.dumps({"config": config, "cipher": None if cipher == "-" else cipher, "serve": None if serve == "-" else serve, "budgetBytes": None if budget == "-" else int(budget),
                  "usedMemoryBytes": int(used), "usedMemoryRssBytes": int(rss), "set": float(set_), "get": float(get),
                  "evictions": stats.get("evictions"), "decrypts": stats.get("decrypts")}))
PY
}

# The data: what native Redis holds resident at the end (first native run); the budgets
# are 100 % and 50 % of it, in whole MiB.
{
  for round in $(seq "$runs"); do
    measure native - - - env
    if [ "$round" = 1 ]; then
      data=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["usedMemoryRssBytes"])' < "$work/rows.jsonl")
      full=$(( (data + 1048575) / 1048576 * 1048576 ))
      half=$(( full / 2 / 1048576 * 1048576 ))
    fi
    for cipher in $ciphers; do
      for serve in $serves; do
        measure "100%" "$cipher" "$full" "$serve" out/bin/tibet-run -q --budget "$full" --cipher "$cipher" --serve "$serve" --stats-json "$work/stats.json" --
        measure "50%" "$cipher" "$half" "$serve" out/bin/tibet-run -q --budget "$half" --cipher "$cipher" --serve "$serve" --stats-json "$work/stats.json" --
      done
    done
  done
} > "$work/rows.jsonl"

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU, Linux $(uname -r), idle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo unknown)$([ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] && echo " (guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns))" || true)"
redis=$(redis-server --version | awk '{print $3}' | cut -d= -f2)
python3 - "$work/rows.jsonl" "$prefix" "$machine" "$redis" "$keys" "$size" "$requests" "$ciphers" <<'PY'
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
prefix, machine, redis, keys, size, requests, ciphers = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8].split()
targets = {"100%": 0.95, "50%": 0.5}
groups = {}
for r in rows:
    groups.setdefault((r["config"], r["cipher"], r.get("serve")), []).append(r)
summary = []
for (config, cipher, serve), rs in groups.items():
    summary.append({"config": config, "cipher": cipher, "serve": serve, "budgetBytes": rs[0]["budgetBytes"], "runs": len(rs),
                    "usedMemoryBytes": int(statistics.median(r["usedMemoryBytes"] for r in rs)),
                    "usedMemoryRssBytes": int(statistics.median(r["usedMemoryRssBytes"] for r in rs)),
                    "set": statistics.median(r["set"] for r in rs), "get": statistics.median(r["get"] for r in rs),
                    "evictions": None if cipher is None else int(statistics.median(r["evictions"] for r in rs)),
                    "decrypts": None if cipher is None else int(statistics.median(r["decrypts"] for r in rs))})
native = summary[0]
for s in summary:
    s["setRatio"] = round(s["set"] / native["set"], 3)
    s["getRatio"] = round(s["get"] / native["get"], 3)
    if s["cipher"]:
        s["target"] = targets[s["config"]]
        s["meetsTarget"] = s["setRatio"] >= s["target"] and s["getRatio"] >= s["target"]
out = {"benchmark": "redis", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
       "machine": machine, "redis": redis, "keys": keys, "valueBytes": size, "requestsPerTest": requests,
       "clients": 50, "ciphers": ciphers, "dataBytes": rows[0]["usedMemoryRssBytes"],
       "budgets": "100% and 50% of the data: native used_memory_rss at the end of the first native run, in whole MiB",
       "targets": {"budgetAboveData": 0.95, "halfBudget": 0.5}, "summary": summary, "runs": rows}
json.dump(out, open(prefix + ".json", "w"), indent=2)
mib = lambda b: f"{b / 1048576:.0f}"
with open(prefix + ".dat", "w") as f:
    for i, s in enumerate(summary[1:]):
        f.write(f'{i} "{s["config"]} {s["serve"]}\\n{s["cipher"]}" {s["setRatio"]} {s["getRatio"]}\n')
with open(prefix + ".md", "w") as f:
    f.write(f"# redis-benchmark under tibet-run, {out['date']}\n\n"
            f"Machine: {machine}. Redis {redis}, {keys} SETs of {size}-byte values over {keys} random keys as the fill, then {requests} requests per test "
            f"over the same key range, 50 clients (redis-benchmark defaults), median of {native['runs']} runs, native and tibet-run interleaved. "
            f"The data: native Redis's used_memory_rss at the end of its (first) run, {mib(out['dataBytes'])} MiB; budgets 100 % (above the data) and 50 % of it, "
            f"with each page cipher (tibet-run --cipher) and each server of the program's memory (--serve). Evictions and decryptions: the engine's counts (tibet-run --stats-json), whole run.\n\n")
    f.write("| run | cipher | served by | budget MiB | used_memory MiB at the end | SET ops/s | × native | GET ops/s | × native | evictions | decrypts | target |\n"
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
    for s in summary:
        target = "-" if not s["cipher"] else f'>= {s["target"]}x: {"yes" if s["meetsTarget"] else "NO"}'
        f.write(f'| {s["config"]} | {s["cipher"] or "-"} | {s["serve"] or "-"} | {mib(s["budgetBytes"]) if s["budgetBytes"] else "-"} | {mib(s["usedMemoryBytes"])} | '
                f'{s["set"]:.0f} | {s["setRatio"]} | {s["get"]:.0f} | {s["getRatio"]} | {s["evictions"] if s["cipher"] else "-"} | '
                f'{s["decrypts"] if s["cipher"] else "-"} | {target} |\n')
PY
gnuplot <<GP
set terminal pngcairo size 1000,520 noenhanced
set output "$prefix.png"
set title "Redis under tibet-run ($keys keys, 4 KiB values): ops/s against native, by cipher and budget (% of the data)"
set ylabel "ops/s, ratio to native (same run)"
set yrange [0:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.6
set key below maxrows 2
set bmargin 8
plot "$prefix.dat" using 3:xtic(2) title "SET", "" using 4 title "GET", \
     0.95 with lines dashtype 2 title "target, budget above the data (0.95x)", 0.5 with lines dashtype 3 title "target, 50 % budget (0.5x)"
GP
rm -f "$prefix.dat"
cat "$prefix.md"
