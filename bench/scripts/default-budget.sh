#!/usr/bin/env bash
# How the default resident budget was chosen: Redis holding 256 MB of 4 KiB values under
# tibet-run at budgets of 16M, 32M, 64M, 128M and unlimited, against native Redis in the
# same run. Two access patterns: a hot set (8192 keys, ~40 MB, the working set of a cache)
# and uniform over all keys (the worst case: every GET is likely a sealed page).
# Writes JSON and a PNG plot (gnuplot) next to the given output prefix.
# Usage: bench/scripts/default-budget.sh bench/results/$(date +%F)-default-budget
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: default-budget.sh OUTPUT-PREFIX}
keys=65536
hot=8192
requests=${TIBET_BENCH_REQUESTS:-100000}
port=7393
work=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for tool in redis-server redis-benchmark redis-cli gnuplot; do
  command -v $tool >/dev/null || { echo "default-budget.sh: $tool is missing (apt-get install redis-server redis-tools gnuplot-nox)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "default-budget.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }

ops() { # test, key range -> ops/s
  redis-benchmark -p $port -t "$1" -n $requests -r "$2" -d 4096 --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub("\"", "", $2); print $2 }'
}

measure() { # budget label, command prefix...
  local label=$1; shift
  "$@" redis-server --port $port --save '' --appendonly no --dir "$work" >"$work/server.log" 2>&1 &
  for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p $port eval "for i = 0, $((keys - 1)) do redis.call('SET', 'key:' .. string.format('%012d', i), string.rep('v', 4096)) end return 1" 0 >/dev/null
  local used hot_get hot_set all_get all_set
  used=$(redis-cli -p $port info memory | awk -F: '/^used_memory:/ { printf "%d", $2 / 1048576 }')
  hot_get=$(ops get $hot); hot_set=$(ops set $hot)
  all_get=$(ops get $keys); all_set=$(ops set $keys)
  redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  printf '{"budget":"%s","usedMemoryMiB":%s,"hotGet":%s,"hotSet":%s,"allGet":%s,"allSet":%s}\n' "$label" "$used" "$hot_get" "$hot_set" "$all_get" "$all_set"
}

{
  measure native env
  for budget in 16M 32M 64M 128M unlimited; do
    measure "$budget" out/bin/tibet-run -q --budget $budget --
  done
} > "$work/rows.jsonl"

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU, Linux $(uname -r)"
python3 - "$work/rows.jsonl" "$prefix" "$machine" "$requests" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
native = rows[0]
for r in rows:
    for k in ("hotGet", "hotSet", "allGet", "allSet"):
        r[k + "Ratio"] = round(r[k] / native[k], 3) if native[k] else None
out = {"benchmark": "default-budget", "date": __import__("datetime").datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
       "machine": sys.argv[3], "redis": "Debian redis-server 7.0.15", "keys": 65536, "valueBytes": 4096,
       "hotKeys": 8192, "requestsPerTest": int(sys.argv[4]), "rows": rows}
json.dump(out, open(sys.argv[2] + ".json", "w"), indent=2)
with open(sys.argv[2] + ".dat", "w") as f:
    for i, r in enumerate(rows[1:]):
        f.write(f'{i} "{r["budget"]}" {r["hotGetRatio"]} {r["hotSetRatio"]} {r["allGetRatio"]} {r["allSetRatio"]}\n')
with open(sys.argv[2] + ".md", "w") as f:
    f.write(f"# Default budget: Redis, 256 MB of 4 KiB values, {out['date']}\n\nMachine: {out['machine']}.\n\n")
    f.write("| budget | used_memory MiB | hot GET | hot SET | all GET | all SET | hot GET × | hot SET × | all GET × | all SET × |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    for r in rows:
        f.write(f'| {r["budget"]} | {r["usedMemoryMiB"]} | {r["hotGet"]:.0f} | {r["hotSet"]:.0f} | {r["allGet"]:.0f} | {r["allSet"]:.0f} | {r["hotGetRatio"]} | {r["hotSetRatio"]} | {r["allGetRatio"]} | {r["allSetRatio"]} |\n')
PY
gnuplot <<GP
set terminal pngcairo size 900,500
set output "$prefix.png"
set title "Redis under tibet-run, 256 MB of 4 KiB values: ops/s against native, by budget"
set ylabel "ratio to native (same run)"
set yrange [0:*]
set key top left
set style data linespoints
plot "$prefix.dat" using 1:3:xtic(2) title "hot set GET", "" using 1:4 title "hot set SET", "" using 1:5 title "all keys GET", "" using 1:6 title "all keys SET"
GP
rm -f "$prefix.dat"
cat "$prefix.md"
