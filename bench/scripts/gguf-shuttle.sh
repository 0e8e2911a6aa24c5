#!/usr/bin/env bash
# gguf-shuttle: a ~1 GiB generated llama model through tibet, beside native, in one run.
#  1. tibet-bench gguf-shuttle: page-by-page read MB/s, p50/p99 (first touch from the file, then from the store after eviction), from
#     64 MiB up to the whole model, with each page cipher, against a plain map of the file.
#  2. llama.cpp (our C driver, mmap load): load time and tokens/s natively, and under
#     tibet-run with a budget that holds the whole model and with one that holds half.
#  3. The same model sealed (tibet seal: MB/s), run under tibet-run --identity --claim:
#     mmap load at both budgets (pages decrypted from the file on first touch), and
#     load_mode NONE (fread through tibet's read path).
#  Every tibet-run row runs once with each page cipher (--cipher); each row gives its ratio of
#  tokens/s to the native run of the same script run, and the engine's evictions and decryptions
#  (tibet-run --stats-json, which also confirms the cipher the engine used).
# Writes PREFIX.json, PREFIX.md and PREFIX.png (gnuplot). Builds nothing: run scripts/build.sh
# and scripts/install-llama.sh first.
# Usage: bench/scripts/gguf-shuttle.sh bench/results/$(date +%F)-gguf-shuttle
# Environment: TIBET_BENCH_TOKENS (default 16), TIBET_BENCH_CIPHERS (default "aes-256-gcm aegis-256"),
#              TIBET_BENCH_GGUF_PRESET (default large, ~1 GiB; medium, ~100 MB, for a quick try).
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: gguf-shuttle.sh OUTPUT-PREFIX}
tokens=${TIBET_BENCH_TOKENS:-16}
ciphers=${TIBET_BENCH_CIPHERS:-aes-256-gcm aegis-256}
preset=${TIBET_BENCH_GGUF_PRESET:-large}
llama=.tools/llama
model=.tools/tmp/gguf-shuttle-$preset.gguf
sealed=.tools/tmp/gguf-shuttle-$preset.sealed.gguf

for tool in gcc gnuplot python3; do
  command -v $tool >/dev/null || { echo "gguf-shuttle.sh: $tool is missing (apt-get install gcc gnuplot-nox python3)" >&2; exit 1; }
done
for tool in out/bin/tibet-run out/bin/tibet out/bin/tibet-bench out/bin/tibet-gguf-gen; do
  [ -x $tool ] || { echo "gguf-shuttle.sh: $tool is missing; run scripts/build.sh" >&2; exit 1; }
done
[ -f $llama/include/llama.h ] || { echo "gguf-shuttle.sh: llama.cpp is not installed in $llama; run scripts/install-llama.sh" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"

work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$sealed"' EXIT

mkdir -p .tools/tmp
if [ ! -f $model ]; then
  out/bin/tibet-gguf-gen --preset $preset --out $model.partial >/dev/null \
    || { echo "gguf-shuttle.sh: tibet-gguf-gen --preset $preset failed" >&2; rm -f $model.partial; exit 1; }
  mv $model.partial $model
fi
driver=$work/llama_driver
gcc -O2 -o $driver tests/integration/native/llama/llama_driver.c -I$llama/include -L$llama/lib -Wl,-rpath,"$(pwd)/$llama/lib" -lllama -lggml
model_bytes=$(stat -c %s $model)
size_mb=$(( model_bytes / 1048576 ))
whole=$(( size_mb + 64 ))
half=$(( size_mb / 2 ))

out/bin/tibet-bench gguf-shuttle --model $model --markdown $work/shuttle.md --json $work/shuttle.json >&2 \
  || { echo "gguf-shuttle.sh: tibet-bench gguf-shuttle failed (status $?)" >&2; exit 1; }

run() { # group config label cipher budget-MiB load model command-prefix...   (cipher and budget "-" for native) -> one JSON line
  local group=$1 config=$2 label=$3 cipher=$4 budget=$5 load=$6 run_model=$7; shift 7
  rm -f "$work/stats.json"
  "$@" $driver --model $run_model --tokens $tokens --load $load > "$work/run.txt" 2> "$work/err.txt" \
    || { echo "gguf-shuttle.sh: the run '$label' ($cipher) failed with status $?:" >&2; tail -n 30 "$work/err.txt" >&2; exit 1; }
  python3 - "$work/run.txt" "$group" "$config" "$label" "$cipher" "$budget" "$load" "$work/stats.json" <<'PY'
import json, sys
out, group, config, label, cipher, budget, load, stats_file = sys.argv[1:]
lines = dict(l.split(": ", 1) for l in open(out).read().splitlines() if ": " in l)
missing = [k for k in ("load_ms", "tokens_per_second", "hash") if k not in lines]
if missing:
    sys.exit(f"gguf-shuttle.sh: the run '{label}' ({cipher}) printed no {', '.join(missing)}")
cipher = None if cipher == "-" else cipher
stats = {}
if cipher:
    # The cipher the engine says it used (tibet-run --stats-json), so a run that ignored --cipher cannot pass as another.
    stats = json.load(open(stats_file))
    if stats.get("cipher") != cipher:
        sys.exit(f"gguf-shuttle.sh: the run '{label}' asked for {cipher}, its statistics name {stats.get('cipher')}")
print(json.dumps({"group": group, "config": config, "label": label, "cipher": cipher,
                  "budgetBytes": None if budget == "-" else int(budget) * 1048576, "load": load,
                  "loadMs": float(lines["load_ms"]), "tokensPerSecond": float(lines["tokens_per_second"]),
                  "hash": lines["hash"].strip(), "evictions": stats.get("evictions"), "decrypts": stats.get("decrypts")}))
PY
}
tibet_run() { # cipher budget-MiB [options...] -- the tibet-run prefix with statistics
  local cipher=$1 budget=$2; shift 2
  echo out/bin/tibet-run -q "$@" --cipher $cipher --budget ${budget}M --stats-json "$work/stats.json" --
}

# The native run reads the model through the page cache; warm it, so that both sides
# are measured "once resident" (tibet reads the file with O_DIRECT and drops its cached pages).
cat $model > /dev/null
{
  run llama native "native (page cache warm)" - - mmap $model env
  for cipher in $ciphers; do
    run llama "budget ${whole}M" "tibet-run, budget ${whole}M (the whole model)" $cipher $whole mmap $model $(tibet_run $cipher $whole)
    run llama "budget ${half}M" "tibet-run, budget ${half}M (half the model)" $cipher $half mmap $model $(tibet_run $cipher $half)
  done
} > "$work/rows.jsonl"

# The sealed model: an identity, an issuer, a claim, and the seal itself (timed by tibet).
tibet=$(pwd)/out/bin/tibet
(cd $work && $tibet keygen --out bench >/dev/null && $tibet keygen --out issuer >/dev/null &&
  $tibet claim issue --issuer issuer.id --subject bench.pub --clearance SECRET --expires +1d --out bench.claim >/dev/null) \
  || { echo "gguf-shuttle.sh: making the identity, issuer and claim (tibet keygen, tibet claim issue) failed" >&2; exit 1; }
rm -f $sealed
$tibet seal $model --to $work/bench.pub --clearance CONFIDENTIAL --issuer $work/issuer.pub --out $sealed > "$work/seal.txt" 2>&1 \
  || { echo "gguf-shuttle.sh: tibet seal failed:" >&2; cat "$work/seal.txt" >&2; exit 1; }
seal_line=$(grep -E '^data ' "$work/seal.txt") \
  || { echo "gguf-shuttle.sh: tibet seal printed no 'data' line:" >&2; cat "$work/seal.txt" >&2; exit 1; }
cat $sealed > /dev/null # ciphertext in the page cache, as for the warm native run
identity="--identity $work/bench.id --claim $work/bench.claim --audit-log $work/audit.jsonl"
{
  for cipher in $ciphers; do
    run sealed "sealed, budget ${whole}M" "sealed, tibet-run --identity, budget ${whole}M" $cipher $whole mmap $sealed $(tibet_run $cipher $whole $identity)
    run sealed "sealed, budget ${half}M" "sealed, tibet-run --identity, budget ${half}M" $cipher $half mmap $sealed $(tibet_run $cipher $half $identity)
    run sealed "sealed fread, budget ${whole}M" "sealed, load_mode NONE (fread), budget ${whole}M" $cipher $whole read $sealed $(tibet_run $cipher $whole $identity)
  done
} >> "$work/rows.jsonl"
rm -f $sealed

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU, Linux $(uname -r)"
python3 - "$work" "$prefix" "$machine" "$preset" "$model_bytes" "$tokens" "$ciphers" "$seal_line" "$(cat $llama/installed-version)" <<'PY'
import json, re, sys, datetime
work, prefix, machine, preset, model_bytes, tokens, ciphers, seal_line, llama_version = sys.argv[1:]
ciphers = ciphers.split()
shuttle = json.load(open(work + "/shuttle.json"))
rows = [json.loads(l) for l in open(work + "/rows.jsonl")]
native = rows[0]
assert native["config"] == "native", "the first llama row is the native run"
for r in rows:
    r["tokensPerSecondRatio"] = round(r["tokensPerSecond"] / native["tokensPerSecond"], 4)
    r["sameTokensAsNative"] = r["hash"] == native["hash"]
rate = re.search(r"\((\d+(?:\.\d+)?) MB/s\)", seal_line)
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
llama_rows = [r for r in rows if r["group"] == "llama"]
sealed_rows = [r for r in rows if r["group"] == "sealed"]
for r in rows:
    del r["group"]
out = {"benchmark": "gguf-shuttle", "date": date, "machine": machine, "preset": preset,
       "model": f"tibet-gguf-gen --preset {preset}", "modelBytes": int(model_bytes), "tokens": int(tokens), "ciphers": ciphers,
       "llamaCpp": f"@node-llama-cpp/linux-x64@{llama_version}",
       "target": {"tokensPerSecondRatioOnceResident": 0.97},
       "shuttle": shuttle,
       "seal": {"output": seal_line, "megabytesPerSecond": float(rate.group(1)) if rate else None},
       "llama": llama_rows, "sealed": sealed_rows}
json.dump(out, open(prefix + ".json", "w"), indent=2)

# shuttle.dat: one line per size: native MB/s, then each cipher's first touch and after eviction.
def mbps(size, cipher, path):
    value = next((r["megabytesPerSecond"] for r in shuttle["rows"] if r["bytes"] == size and r["cipher"] == cipher
                  and r["path"].startswith(path)), None)
    return "NaN" if value is None else value
with open(prefix + ".shuttle.dat", "w") as f:
    for size in shuttle["sizes"]:
        values = [mbps(size, None, "native")]
        for c in shuttle["ciphers"]:
            values += [mbps(size, c, "tibet, first touch"), mbps(size, c, "tibet, after eviction")]
        label = next(r["size"] for r in shuttle["rows"] if r["bytes"] == size)
        f.write(f'"{label}" ' + " ".join(str(v) for v in values) + "\n")
# llama.dat: one line per configuration, one column per cipher: ratio of tokens/s to native.
configs = {}
for r in rows[1:]:
    configs.setdefault(r["config"], {})[r["cipher"]] = r["tokensPerSecondRatio"]
with open(prefix + ".llama.dat", "w") as f:
    for config, by_cipher in configs.items():
        f.write(f'"{config}" ' + " ".join(str(by_cipher.get(c, "NaN")) for c in ciphers) + "\n")
with open(prefix + ".gp", "w") as f:
    f.write(f'shuttle_ciphers = "{" ".join(shuttle["ciphers"])}"\nciphers = "{" ".join(ciphers)}"\n'
            f'model_mib = {int(model_bytes) // 1048576}\n')

def table(rs):
    lines = ["| run | cipher | load ms | tokens/s | × native | token hash |", "|---|---|--:|--:|--:|---|"]
    for r in rs:
        lines.append(f'| {r["label"]} | {r["cipher"] or "-"} | {r["loadMs"]:.1f} | {r["tokensPerSecond"]:.2f} | '
                     f'{r["tokensPerSecondRatio"]} | {r["hash"]} |')
    return "\n".join(lines)
with open(prefix + ".md", "w") as f:
    f.write(open(work + "/shuttle.md").read().rstrip("\n") + "\n\n")
    f.write(f"""## llama.cpp on the same model

Our C driver (tests/integration/native/llama/llama_driver.c, llama.cpp from npm {out['llamaCpp']}), mmap load,
greedy decoding of {tokens} tokens from "Hello", natively and under tibet-run with each page cipher (--cipher).
Equal hashes mean identical tokens. Target (docs/background.md): tokens/s once resident >= 0.97x native.
Machine: {machine}. × native: tokens/s against the native run of this script run.

{table(llama_rows)}

## The same model sealed

`tibet seal` to one identity: {seal_line}. Under tibet-run with that identity and a valid claim, the mmap load
reads each page's ciphertext from the file and decrypts it on first touch (no import); load_mode NONE reads the
weights with fread, which tibet answers with decrypted bytes. The file stays AES-256-GCM; the cipher column is the
page cipher (--cipher) that seals the pages in RAM. Equal hashes to the native run mean identical tokens.

{table(sealed_rows)}
""")
PY
gnuplot <<GP
load "$prefix.gp"
set terminal pngcairo size 1400,560 noenhanced
set output "$prefix.png"
set multiplot layout 1,2 title sprintf("tibet gguf-shuttle ($preset preset, %d MiB model): the model through the encrypted arena, and llama.cpp under tibet-run (same run)", model_mib)
set title "tibet-bench gguf-shuttle: page-by-page read, by prefix of the model"
set ylabel "read MB/s (10^6 bytes/s, log scale)"
set logscale y
set yrange [1:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.6
set key below maxrows 3
set grid ytics
plot "$prefix.shuttle.dat" using 2:xtic(1) title "native map (page cache)", \
     for [i=1:words(shuttle_ciphers)] "" using (column(2 * i + 1)) title word(shuttle_ciphers, i)." first touch (file)", \
     for [i=1:words(shuttle_ciphers)] "" using (column(2 * i + 2)) title word(shuttle_ciphers, i)." after eviction (store)", \
     1500 with lines dashtype 2 title "target 1.5 GB/s"
set title "llama.cpp tokens/s under tibet-run, ratio to native"
set ylabel "tokens/s, ratio to native (log scale)"
set yrange [0.001:2]
set xtics rotate by 20 right
plot for [i=1:words(ciphers)] "$prefix.llama.dat" using (column(i + 1)):xtic(1) title word(ciphers, i), \
     0.97 with lines dashtype 2 title "target once resident (0.97x)"
unset multiplot
GP
rm -f "$prefix.shuttle.dat" "$prefix.llama.dat" "$prefix.gp"
[ -s "$prefix.png" ] || { echo "gguf-shuttle.sh: gnuplot wrote no $prefix.png" >&2; exit 1; }
cat "$prefix.md"
