#!/usr/bin/env bash
# llama.cpp (our driver, the real libllama from npm) on a ~100 MB Q8_0 model: tokens/s and
# time to first token natively and under tibet-run at budgets of 100 %, 50 % and 25 % of
# the model, for each eviction policy in 4 KiB pages and with the map in 2 MiB pages
# (--huge-pages), in one run. The page cache is dropped before every
# run, so each one starts cold (the time to first token includes reading the model).
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/llama-budget.sh bench/results/$(date +%F)-llama-budget
# Environment: TIBET_BENCH_TOKENS (default 32), TIBET_BENCH_RUNS (default 3; the median is kept),
#              TIBET_BENCH_THREADS (default: all CPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: llama-budget.sh OUTPUT-PREFIX}
tokens=${TIBET_BENCH_TOKENS:-32}
runs=${TIBET_BENCH_RUNS:-3}
threads=${TIBET_BENCH_THREADS:-$(nproc)}
llama=.tools/llama
for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "llama-budget.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "llama-budget.sh: out/bin/tibet-run is missing; run scripts/build.sh" >&2; exit 1; }
[ -f $llama/include/llama.h ] || { echo "llama-budget.sh: llama.cpp is not installed in $llama; run scripts/install-llama.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "llama-budget.sh: must run as root (it drops the page cache before each run)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/llama_driver" tests/integration/native/llama/llama_driver.c -I$llama/include \
  -L$llama/lib -Wl,-rpath,$(realpath $llama/lib) -lllama -lggml
out/bin/tibet-gguf-gen --out "$work/model.gguf" --preset medium > "$work/model.txt"
size=$(awk '/^size:/ { print $2 }' "$work/model.txt")

run_once() { # label budget eviction command-prefix...
  local label=$1 budget=$2 eviction=$3; shift 3
  sync; echo 3 > /proc/sys/vm/drop_caches
  "$@" "$work/llama_driver" --model "$work/model.gguf" --tokens "$tokens" --threads "$threads" \
      --prompt "The quick brown fox jumps over the lazy dog" > "$work/out.txt" 2> "$work/err.txt" \
    || { echo "llama-budget.sh: the run '$label' failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  python3 - "$work/out.txt" "$label" "$budget" "$eviction" <<'PY'
import json, sys
lines = dict(l.split(": ", 1) for l in open(sys.argv[1]).read().splitlines() if ": " in l)
print(json.dumps({"label": sys.argv[2], "budget": sys.argv[3], "eviction": sys.argv[4],
                  "tokensPerSecond": float(lines["tokens_per_second"]), "firstTokenMs": float(lines["first_token_ms"]),
                  "hash": lines["hash"].strip()}))
PY
}

{
  for _ in $(seq "$runs"); do run_once native - - env; done
  for fraction in 100 50 25; do
    budget=$(( size * fraction / 100 / 4096 * 4096 ))
    # 100 %: the model plus the program's own large allocations (KV cache, compute buffers).
    [ $fraction = 100 ] && budget=$(( size + (64 << 20) ))
    for eviction in scan-resistant fifo; do
      for _ in $(seq "$runs"); do
        run_once "$fraction% $eviction" "$budget" "$eviction" out/bin/tibet-run -q --budget "$budget" --eviction "$eviction" --
      done
    done
    # The model map in 2 MiB pages (--huge-pages), the same fraction of the model resident.
    huge=$(( size * fraction / 100 / (2 << 20) * (2 << 20) ))
    [ $fraction = 100 ] && huge=$(( (size + (2 << 20) - 1) / (2 << 20) * (2 << 20) ))
    for _ in $(seq "$runs"); do
      run_once "$fraction% 2MiB" "$huge" scan-resistant out/bin/tibet-run -q --huge-pages "$huge" --
    done
  done
} > "$work/rows.jsonl"

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU, Linux $(uname -r)"
python3 - "$work/rows.jsonl" "$prefix" "$machine" "$size" "$tokens" "$threads" <<'PY'
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault(r["label"], []).append(r)
native_hash = groups["native"][0]["hash"]
summary = []
for label, rs in groups.items():
    summary.append({"label": label, "budgetBytes": rs[0]["budget"], "eviction": rs[0]["eviction"],
                    "tokensPerSecond": statistics.median(r["tokensPerSecond"] for r in rs),
                    "firstTokenMs": statistics.median(r["firstTokenMs"] for r in rs),
                    "runs": len(rs), "sameTokensAsNative": all(r["hash"] == native_hash for r in rs)})
native = summary[0]
for s in summary:
    s["tokensPerSecondRatio"] = round(s["tokensPerSecond"] / native["tokensPerSecond"], 4)
    s["firstTokenRatio"] = round(s["firstTokenMs"] / native["firstTokenMs"], 2)
out = {"benchmark": "llama-budget", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
       "machine": sys.argv[3], "modelBytes": int(sys.argv[4]), "model": "tibet-gguf-gen --preset medium (Q8_0)",
       "tokens": int(sys.argv[5]), "threads": int(sys.argv[6]), "cipher": "AES-256-GCM",
       "pageCache": "dropped before every run", "summary": summary, "runs": rows}
json.dump(out, open(sys.argv[2] + ".json", "w"), indent=2)
with open(sys.argv[2] + ".dat", "w") as f:
    for i, s in enumerate(summary):
        f.write(f'{i} "{s["label"]}" {s["tokensPerSecondRatio"]} {s["firstTokenRatio"]}\n')
with open(sys.argv[2] + ".md", "w") as f:
    f.write(f"# llama.cpp at small budgets, {out['date']}\n\nMachine: {out['machine']}. Model: {out['modelBytes']} bytes, {out['model']}; "
            f"{out['tokens']} tokens, {out['threads']} threads, page cache dropped before each run, median of {summary[0]['runs']} runs.\n\n")
    f.write("| run | budget (bytes) | tokens/s | × native | first token ms | × native | same tokens |\n|---|--:|--:|--:|--:|--:|---|\n")
    for s in summary:
        f.write(f'| {s["label"]} | {s["budgetBytes"]} | {s["tokensPerSecond"]:.2f} | {s["tokensPerSecondRatio"]} | {s["firstTokenMs"]:.0f} | {s["firstTokenRatio"]} | {"yes" if s["sameTokensAsNative"] else "NO"} |\n')
PY
gnuplot <<GP
set terminal pngcairo size 1000,500 noenhanced
set output "$prefix.png"
set title "llama.cpp under tibet-run (~100 MB Q8_0 model): tokens/s against native, by budget and eviction policy"
set ylabel "tokens/s, ratio to native (same run)"
set logscale y
set yrange [0.001:2]
set style data histogram
set style fill solid 0.6
set xtics rotate by -30
plot "$prefix.dat" using 3:xtic(2) title "tokens/s ÷ native"
GP
rm -f "$prefix.dat"
cat "$prefix.md"
