#!/usr/bin/env bash
# redis-benchmark SET/GET ops/s: native Redis against Redis under tibet-run, in one run,
# with a budget above the data and with one below it (compare used_memory).
# Usage: bench/scripts/redis.sh [markdown-output]      (needs scripts/build.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-}
keys=${TIBET_BENCH_KEYS:-40000}
size=4096
requests=${TIBET_BENCH_REQUESTS:-40000}
port=7391
work=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for tool in redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "redis.sh: $tool is missing (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "redis.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }

ops() { # test -> ops/s from redis-benchmark --csv
  redis-benchmark -p $port -t "$1" -n $requests -r $keys -d $size --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { gsub("\"", "", $2); print $2 }'
}

measure() { # label, command prefix...
  local label=$1; shift
  "$@" redis-server --port $port --save '' --appendonly no --dir "$work" >"$work/server.log" 2>&1 &
  for _ in $(seq 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p $port -t set -n $keys -r $keys -d $size -q >/dev/null 2>&1   # fill
  local used set get
  used=$(redis-cli -p $port info memory | awk -F: '/^used_memory:/ { printf "%d", $2 / 1048576 }')
  set=$(ops set)
  get=$(ops get)
  redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  printf '| %s | %s | %s | %s |\n' "$label" "$used" "$set" "$get"
}

data_mb=$(( keys * (size + 1024) / 1048576 ))
rows=$(
  measure "native" env
  measure "tibet-run, budget $(( data_mb * 2 ))M (above the data)" out/bin/tibet-run --budget $(( data_mb * 2 ))M --
  measure "tibet-run, budget $(( data_mb / 2 ))M (below the data)" out/bin/tibet-run --budget $(( data_mb / 2 ))M --
)
report=$(cat <<REPORT
# redis-benchmark under tibet-run, $(date -u '+%Y-%m-%d %H:%M UTC')

Machine: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), nproc $(nproc).
Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2), $keys keys of $size bytes, $requests requests per test, 50 clients (redis-benchmark default).

| run | used_memory MiB | SET ops/s | GET ops/s |
|---|--:|--:|--:|
$rows
REPORT
)
echo "$report"
[ -z "$out" ] || echo "$report" > "$out"
