#!/usr/bin/env bash
# llama.cpp (our driver, the real libllama from npm) on a ~100 MB Q8_0 model: tokens/s and
# time to first token natively and under tibet-run at budgets of 100 %, 50 % and 25 % of
# the model, for each eviction policy in 4 KiB pages and with the map in 2 MiB pages
# (--huge-pages), each with every page cipher (--cipher), in one run. The page cache is
# dropped before every run, so each one starts cold (the time to first token includes
# reading the model). The 2 MiB model pages are never sealed (they are read from the file
# again), so in those rows the cipher only seals the program's own large allocations.
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/llama-budget.sh bench/results/$(date +%F)-llama-budget
# Environment: TIBET_BENCH_TOKENS (default 32), TIBET_BENCH_RUNS (default 3; the median is kept),
#              TIBET_BENCH_THREADS (default: all CPUs),
#              TIBET_BENCH_CIPHERS (default "aes-256-gcm aegis-256"),
#              TIBET_BENCH_FRACTIONS (budgets in % of the model, default "100 50 25"),
#              TIBET_BENCH_ABLATIONS (1: also each engine feature off in turn, below 100 %).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: llama-budget.sh OUTPUT-PREFIX}
tokens=${TIBET_BENCH_TOKENS:-32}
runs=${TIBET_BENCH_RUNS:-3}
threads=${TIBET_BENCH_THREADS:-$(nproc)}
ciphers=${TIBET_BENCH_CIPHERS:-aes-256-gcm aegis-256}
fractions=${TIBET_BENCH_FRACTIONS:-100 50 25}
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

run_once() { # config budget eviction cipher command-prefix...   (cipher "-" for the native runs)
  local config=$1 budget=$2 eviction=$3 cipher=$4; shift 4
  local label=$config
  [ "$cipher" = - ] || label="$config $cipher"
  rm -f "$work/stats.json"
  sync; echo 3 > /proc/sys/vm/drop_caches
  "$@" "$work/llama_driver" --model "$work/model.gguf" --tokens "$tokens" --threads "$threads" \
      --prompt "The quick brown fox jumps over the lazy dog" > "$work/out.txt" 2> "$work/err.txt" \
    || { echo "llama-budget.sh: the run '$label' failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  python3 - "$work/out.txt" "$label" "$config" "$budget" "$eviction" "$cipher" "$work/stats.json" <<'PY'
import json, sys
lines = dict(l.split(": ", 1) for l in open(sys.argv[1]).read().splitlines() if ": " in l)
cipher = None if sys.argv[6] == "-" else sys.argv[6]
stats = {}
if cipher:
    # The cipher the engine says it used (tibet-run --stats-json), so a run that ignored --cipher cannot pass as another.
    stats = json.load(open(sys.argv[7]))
    if stats.get("cipher") != cipher:
        sys.exit(f"llama-budget.sh: the run '{sys.argv[2]}' asked for {cipher}, its statistics name {stats.get('cipher')}")
print(json.dumps({"label": sys.argv[2], "config": sys.argv[3], "budget": sys.argv[4], "eviction": sys.argv[5], "cipher": cipher,
                  "tokensPerSecond": float(lines["tokens_per_second"]), "firstTokenMs": float(lines["first_token_ms"]),
                  "hash": lines["hash"].strip(), "evictions": stats.get("evictions"), "decrypts": stats.get("decrypts")}))
PY
}

{
  for _ in $(seq "$runs"); do run_once native - - - env; done
  for fraction in $fractions; do
    budget=$(( size * fraction / 100 / 4096 * 4096 ))
    # 100 %: the model plus the program's own large allocations (KV cache, compute buffers).
    [ $fraction = 100 ] && budget=$(( size + (64 << 20) ))
    for eviction in scan-resistant fifo; do
      for cipher in $ciphers; do
        for _ in $(seq "$runs"); do
          run_once "$fraction% $eviction" "$budget" "$eviction" "$cipher" \
            out/bin/tibet-run -q --budget "$budget" --eviction "$eviction" --cipher "$cipher" --stats-json "$work/stats.json" --
        done
      done
    done
    # Ablations (TIBET_BENCH_ABLATIONS=1): the default eviction with one engine feature
    # off at a time (TIBET_FILL_THREADS, TIBET_TRACK_WRITES, TIBET_DECRYPT_AHEAD), first cipher only.
    if [ "${TIBET_BENCH_ABLATIONS:-0}" = 1 ] && [ $fraction != 100 ]; then
      cipher=${ciphers%% *}
      for off in TIBET_FILL_THREADS TIBET_TRACK_WRITES TIBET_DECRYPT_AHEAD; do
        for _ in $(seq "$runs"); do
          run_once "$fraction% scan-resistant $off=0" "$budget" scan-resistant "$cipher" \
            env $off=0 out/bin/tibet-run -q --budget "$budget" --cipher "$cipher" --stats-json "$work/stats.json" --
        done
      done
    fi
    # The model map in 2 MiB pages (--huge-pages), the same fraction of the model resident.
    huge=$(( size * fraction / 100 / (2 << 20) * (2 << 20) ))
    [ $fraction = 100 ] && huge=$(( (size + (2 << 20) - 1) / (2 << 20) * (2 << 20) ))
    for cipher in $ciphers; do
      for _ in $(seq "$runs"); do
        run_once "$fraction% 2MiB" "$huge" scan-resistant "$cipher" \
          out/bin/tibet-run -q --huge-pages "$huge" --cipher "$cipher" --stats-json "$work/stats.json" --
      done
    done
  done
} > "$work/rows.jsonl"

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU, Linux $(uname -r), idle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo unknown)$([ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] && echo " (guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns))" || true)"
python3 - "$work/rows.jsonl" "$prefix" "$machine" "$size" "$tokens" "$threads" "$ciphers" <<'PY'
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
ciphers = sys.argv[7].split()
groups = {}
for r in rows:
    groups.setdefault(r["label"], []).append(r)
native_hash = groups["native"][0]["hash"]
summary = []
for label, rs in groups.items():
    summary.append({"label": label, "config": rs[0]["config"], "cipher": rs[0]["cipher"], "budgetBytes": rs[0]["budget"],
                    "eviction": rs[0]["eviction"],
                    "tokensPerSecond": statistics.median(r["tokensPerSecond"] for r in rs),
                    "firstTokenMs": statistics.median(r["firstTokenMs"] for r in rs),
                    "runs": len(rs), "sameTokensAsNative": all(r["hash"] == native_hash for r in rs)})
native = summary[0]
for s in summary:
    s["tokensPerSecondRatio"] = round(s["tokensPerSecond"] / native["tokensPerSecond"], 4)
    s["firstTokenRatio"] = round(s["firstTokenMs"] / native["firstTokenMs"], 2)
out = {"benchmark": "llama-budget", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
       "machine": sys.argv[3], "modelBytes": int(sys.argv[4]), "model": "tibet-gguf-gen --preset medium (Q8_0)",
       "tokens": int(sys.argv[5]), "threads": int(sys.argv[6]), "ciphers": ciphers,
       "pageCache": "dropped before every run", "summary": summary, "runs": rows}
json.dump(out, open(sys.argv[2] + ".json", "w"), indent=2)
# One line per configuration (budget and paging), one column per cipher: ratio of tokens/s to native.
configs = {}
for s in summary[1:]:
    configs.setdefault(s["config"], {})[s["cipher"]] = s["tokensPerSecondRatio"]
with open(sys.argv[2] + ".dat", "w") as f:
    for i, (config, by_cipher) in enumerate(configs.items()):
        f.write(f'{i} "{config}" ' + " ".join(str(by_cipher.get(c, "NaN")) for c in ciphers) + "\n")
with open(sys.argv[2] + ".md", "w") as f:
    f.write(f"# llama.cpp at small budgets, {out['date']}\n\nMachine: {out['machine']}. Model: {out['modelBytes']} bytes, {out['model']}; "
            f"{out['tokens']} tokens, {out['threads']} threads, page cache dropped before each run, median of {summary[0]['runs']} runs. "
            f"Ciphers: {', '.join(ciphers)} (tibet-run --cipher; the 2 MiB model pages are never sealed, so there the cipher only seals the program's own allocations).\n\n")
    f.write("| run | cipher | budget (bytes) | tokens/s | × native | first token ms | × native | same tokens |\n|---|---|--:|--:|--:|--:|--:|---|\n")
    for s in summary:
        f.write(f'| {s["config"]} | {s["cipher"] or "-"} | {s["budgetBytes"]} | {s["tokensPerSecond"]:.2f} | {s["tokensPerSecondRatio"]} | {s["firstTokenMs"]:.0f} | {s["firstTokenRatio"]} | {"yes" if s["sameTokensAsNative"] else "NO"} |\n')
PY
gnuplot <<GP
set terminal pngcairo size 1000,500 noenhanced
set output "$prefix.png"
set title "llama.cpp under tibet-run (~100 MB Q8_0 model): tokens/s against native, by budget, paging and cipher"
set ylabel "tokens/s, ratio to native (same run)"
set logscale y
set yrange [0.001:2]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.6
set xtics rotate by -30
set key below
ciphers = "$ciphers"
plot for [i=1:words(ciphers)] "$prefix.dat" using (column(i + 2)):xtic(2) title word(ciphers, i), \
     1 with lines dashtype 2 title "native"
GP
rm -f "$prefix.dat"
cat "$prefix.md"
