#!/usr/bin/env bash
# Issue 12: a sealed model whose key stays in the custodian (tibet-run --identity, the
# default: the custodian installs the pages into the program itself, and evicted pages are
# dropped and installed again), the same through the shared window (TIBET_CUSTODIAN_INSTALL=0), the same with
# its evicted pages sealed in the program under a key of the program's
# (TIBET_REFETCH_SOURCE=0), and the key handed to the program (TIBET_CUSTODIAN=0),
# beside native llama.cpp on the plain model: tokens/s and time to first token with a cold
# page cache, at budgets that hold the model (100 %) and half of it (50 %), rounds
# interleaved (this VM is noisy; medians are kept). Every run must decode the native tokens.
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot).
# Usage: bench/scripts/sealed-custodian.sh bench/results/$(date +%F)-sealed-custodian
# Environment: TIBET_BENCH_TOKENS (default 32), TIBET_BENCH_ROUNDS (default 3),
#              TIBET_BENCH_THREADS (default: all CPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: sealed-custodian.sh OUTPUT-PREFIX}
tokens=${TIBET_BENCH_TOKENS:-32}
rounds=${TIBET_BENCH_ROUNDS:-3}
threads=${TIBET_BENCH_THREADS:-$(nproc)}
llama=.tools/llama
for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "sealed-custodian.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
[ -x out/bin/tibet-run ] || { echo "sealed-custodian.sh: out/bin/tibet-run is missing: run scripts/build.sh" >&2; exit 1; }
[ -f $llama/include/llama.h ] || { echo "sealed-custodian.sh: llama.cpp is not installed in $llama: run scripts/install-llama.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "sealed-custodian.sh: must run as root (it drops the page cache before each run)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/llama_driver" tests/integration/native/llama/llama_driver.c -I$llama/include \
  -L$llama/lib -Wl,-rpath,$(realpath $llama/lib) -lllama -lggml
out/bin/tibet-gguf-gen --out "$work/model.gguf" --preset medium > "$work/model.txt"
size=$(awk '/^size:/ { print $2 }' "$work/model.txt")
out/bin/tibet keygen --out "$work/alice" > /dev/null
out/bin/tibet keygen --out "$work/issuer" > /dev/null
out/bin/tibet claim issue --issuer "$work/issuer.id" --subject "$work/alice.pub" --clearance SECRET --expires +1d --out "$work/alice.claim" > /dev/null
out/bin/tibet seal "$work/model.gguf" --to "$work/alice.pub" --clearance CONFIDENTIAL --issuer "$work/issuer.pub" --out "$work/model.sealed.gguf" > /dev/null

run_once() { # label budget-percent model command-prefix...
  local label=$1 percent=$2 model=$3; shift 3
  sync; echo 3 > /proc/sys/vm/drop_caches
  "$@" "$work/llama_driver" --model "$model" --tokens "$tokens" --threads "$threads" \
      --prompt "The quick brown fox jumps over the lazy dog" > "$work/out.txt" 2> "$work/err.txt" \
    || { echo "sealed-custodian.sh: the run '$label' failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  if grep -q "dead material" "$work/err.txt"; then echo "sealed-custodian.sh: '$label' ran on dead material:" >&2; cat "$work/err.txt" >&2; exit 1; fi
  python3 - "$work/out.txt" "$label" "$percent" <<'PY'
import json, sys
lines = dict(l.split(": ", 1) for l in open(sys.argv[1]).read().splitlines() if ": " in l)
print(json.dumps({"label": sys.argv[2], "budgetPercent": None if sys.argv[3] == "-" else int(sys.argv[3]),
                  "tokensPerSecond": float(lines["tokens_per_second"]), "firstTokenMs": float(lines["first_token_ms"]), "hash": lines["hash"].strip()}))
PY
}

{
  for _ in $(seq "$rounds"); do
    run_once native - "$work/model.gguf" env
    for percent in 100 50; do
      budget=$(( size * percent / 100 / 4096 * 4096 ))
      [ $percent = 100 ] && budget=$(( size + (64 << 20) ))
      for where in custodian custodian-window custodian-sealed-here program; do
        switch=1; [ $where = program ] && switch=0
        refetch=; [ $where = custodian-sealed-here ] && refetch=0
        install=1; [ $where = custodian-window ] && install=0
        run_once "$where" $percent "$work/model.sealed.gguf" env TIBET_CUSTODIAN=$switch TIBET_REFETCH_SOURCE=$refetch TIBET_CUSTODIAN_INSTALL=$install \
          out/bin/tibet-run -q --budget $budget --audit-log "$work/audit.jsonl" --identity "$work/alice.id" --claim "$work/alice.claim" --
      done
    done
  done
} > "$work/runs.jsonl"

python3 - "$prefix" "$work" "$size" "$rounds" "$tokens" "$threads" <<'PY'
import json, platform, subprocess, sys, datetime, statistics
prefix, work, size, rounds, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
runs = [json.loads(l) for l in open(f"{work}/runs.jsonl")]
hashes = {r["hash"] for r in runs}
assert len(hashes) == 1, f"the runs decoded different tokens: {hashes}"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
def median(label, percent, key):
    return statistics.median(r[key] for r in runs if r["label"] == label and r["budgetPercent"] == percent)
native = {k: median("native", None, k) for k in ("tokensPerSecond", "firstTokenMs")}
rows = []
for percent in (100, 50):
    for where in ("custodian", "custodian-window", "custodian-sealed-here", "program"):
        t, f = median(where, percent, "tokensPerSecond"), median(where, percent, "firstTokenMs")
        rows.append({"budgetPercent": percent, "keyIn": where, "tokensPerSecond": t, "tokensVsNative": t / native["tokensPerSecond"],
                     "firstTokenMs": f, "firstTokenVsNative": f / native["firstTokenMs"]})
doc = {"benchmark": "sealed-custodian", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "machine": {"cpu": cpu, "cpus": subprocess.check_output(["nproc"], text=True).strip(), "kernel": platform.release()},
       "command": f"bench/scripts/sealed-custodian.sh ({tokens} tokens, {threads} threads, {rounds} rounds)",
       "modelBytes": size, "native": native, "medians": rows, "runs": runs}
json.dump(doc, open(prefix + ".json", "w"), indent=1)
lines = [f"# A sealed model with its key in the custodian, {doc['date'][:10]}", "",
         f"Machine: {cpu}, {doc['machine']['cpus']} CPUs, Linux {doc['machine']['kernel']}. Model: {size} bytes (tibet-gguf-gen --preset medium, Q8_0), sealed; "
         f"{tokens} tokens, {threads} threads, page cache dropped before each run, medians of {rounds} interleaved rounds. Every run decoded the native tokens.",
         "'custodian': the default; the identity and the model's data key stay in the custodian, which reads, decrypts and installs the model's pages "
         "into the program itself (UFFDIO_COPY on the program's userfaultfd), and evicted pages are dropped and installed again (no key or copy of them in the program). "
         "'custodian-window': the same, with the pages decrypted in a window shared with the program, which copies them in (TIBET_CUSTODIAN_INSTALL=0, the way before). "
         "'custodian-sealed-here': the same with evicted pages sealed in the program under a key of the program's (TIBET_REFETCH_SOURCE=0). "
         "'program': TIBET_CUSTODIAN=0; the identity is handed to the program, which decrypts itself.", "",
         f"Native (plain model): {native['tokensPerSecond']:.1f} tokens/s, first token {native['firstTokenMs']:.0f} ms.", "",
         "| budget (of the model) | key in | tokens/s | × native | first token ms | × native |", "|--:|---|--:|--:|--:|--:|"]
for r in rows:
    lines.append(f"| {r['budgetPercent']} % | {r['keyIn']} | {r['tokensPerSecond']:.1f} | {r['tokensVsNative']:.3f} | {r['firstTokenMs']:.0f} | {r['firstTokenVsNative']:.2f} |")
open(prefix + ".md", "w").write("\n".join(lines) + "\n")
with open(f"{work}/plot.dat", "w") as f:
    for percent in (100, 50):
        c, w, s, p = (next(r for r in rows if r["budgetPercent"] == percent and r["keyIn"] == k) for k in ("custodian", "custodian-window", "custodian-sealed-here", "program"))
        f.write(f"\"{percent} %\" {c['tokensVsNative']} {w['tokensVsNative']} {s['tokensVsNative']} {p['tokensVsNative']} "
                f"{c['firstTokenVsNative']} {w['firstTokenVsNative']} {s['firstTokenVsNative']} {p['firstTokenVsNative']}\n")
PY
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$prefix.png"
set title "Sealed model: key in the custodian against key in the program (ratio to native)"
set ylabel "× native"
set xlabel "resident budget, of the model"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key outside right top
plot "$work/plot.dat" using 2:xtic(1) title "tokens/s, custodian (installs)", "" using 3 title "tokens/s, custodian, window", \\
     "" using 4 title "tokens/s, custodian, sealed here", "" using 5 title "tokens/s, program", \\
     "" using 6 title "first token time, custodian (installs)", "" using 7 title "first token time, custodian, window", \\
     "" using 8 title "first token time, custodian, sealed here", "" using 9 title "first token time, program"
GP
cat "$prefix.md"
