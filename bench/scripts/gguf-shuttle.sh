#!/usr/bin/env bash
# gguf-shuttle: a ~1 GiB generated llama model through tibet, beside native, in one run.
#  1. tibet-bench gguf-shuttle: page-by-page read MB/s, p50/p99 (first touch from the file, then from the store after eviction), from
#     64 MiB up to the whole model, with each page cipher, against a plain map of the file.
#  2. llama.cpp (our C driver, mmap load): load time and tokens/s natively, and under
#     tibet-run with a budget that holds the whole model and with one that holds half.
#  3. The same model sealed (tibet seal: MB/s), run under tibet-run --identity --claim:
#     mmap load at both budgets (pages decrypted from the file on first touch), and
#     load_mode NONE (fread through tibet's read path).
#  Every tibet-run row runs once with each page cipher (--cipher).
# Usage: bench/scripts/gguf-shuttle.sh [markdown-output]
#        (needs scripts/build.sh and scripts/install-llama.sh first)
# Environment: TIBET_BENCH_TOKENS (default 16), TIBET_BENCH_CIPHERS (default "aes-256-gcm aegis-256"),
#              TIBET_BENCH_GGUF_PRESET (default large, ~1 GiB; medium, ~100 MB, for a quick try).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-}
tokens=${TIBET_BENCH_TOKENS:-16}
ciphers=${TIBET_BENCH_CIPHERS:-aes-256-gcm aegis-256}
preset=${TIBET_BENCH_GGUF_PRESET:-large}
llama=.tools/llama
model=.tools/tmp/gguf-shuttle-$preset.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for tool in out/bin/tibet-run out/bin/tibet-bench out/bin/tibet-gguf-gen; do
  [ -x $tool ] || { echo "gguf-shuttle.sh: $tool is missing; run scripts/build.sh" >&2; exit 1; }
done
[ -f $llama/include/llama.h ] || { echo "gguf-shuttle.sh: llama.cpp is missing; run scripts/install-llama.sh" >&2; exit 1; }

mkdir -p .tools/tmp
[ -f $model ] || out/bin/tibet-gguf-gen --preset $preset --out $model >/dev/null
driver=$work/llama_driver
gcc -O2 -o $driver tests/integration/native/llama/llama_driver.c -I$llama/include -L$llama/lib -Wl,-rpath,"$(pwd)/$llama/lib" -lllama -lggml
size_mb=$(( $(stat -c %s $model) / 1048576 ))

out/bin/tibet-bench gguf-shuttle --model $model --markdown $work/shuttle.md >&2

field() { awk -v k="$1:" '$1 == k { print $2 }'; }
run() { # label, cipher, command prefix... (model and load mode from $run_model and $run_load)
  local label=$1 cipher=$2; shift 2
  "$@" $driver --model ${run_model:-$model} --tokens $tokens --load ${run_load:-mmap} > $work/run.txt
  printf '| %s | %s | %s | %s | %s |\n' "$label" "$cipher" "$(field load_ms < $work/run.txt)" "$(field tokens_per_second < $work/run.txt)" "$(field hash < $work/run.txt)"
}
# The native run reads the model through the page cache; warm it, so that both sides
# are measured "once resident" (tibet reads the file with O_DIRECT and drops its cached pages).
cat $model > /dev/null
rows=$(
  run "native (page cache warm)" - env
  for cipher in $ciphers; do
    run "tibet-run, budget $(( size_mb + 64 ))M (the whole model)" $cipher out/bin/tibet-run --cipher $cipher --budget $(( size_mb + 64 ))M --
    run "tibet-run, budget $(( size_mb / 2 ))M (half the model)" $cipher out/bin/tibet-run --cipher $cipher --budget $(( size_mb / 2 ))M --
  done
)

# The sealed model: an identity, an issuer, a claim, and the seal itself (timed by tibet).
tibet=$(pwd)/out/bin/tibet
(cd $work && $tibet keygen --out bench >/dev/null && $tibet keygen --out issuer >/dev/null &&
  $tibet claim issue --issuer issuer.id --subject bench.pub --clearance SECRET --expires +1d --out bench.claim >/dev/null)
sealed=.tools/tmp/gguf-shuttle-$preset.sealed.gguf
rm -f $sealed
seal_line=$($tibet seal $model --to $work/bench.pub --clearance CONFIDENTIAL --issuer $work/issuer.pub --out $sealed 2>&1 | grep -E '^data ' || true)
cat $sealed > /dev/null # ciphertext in the page cache, as for the warm native run
identity="--identity $work/bench.id --claim $work/bench.claim --audit-log $work/audit.jsonl"
sealed_rows=$(
  for cipher in $ciphers; do
    run_model=$sealed run "sealed, tibet-run --identity, budget $(( size_mb + 64 ))M" $cipher out/bin/tibet-run $identity --cipher $cipher --budget $(( size_mb + 64 ))M --
    run_model=$sealed run "sealed, tibet-run --identity, budget $(( size_mb / 2 ))M" $cipher out/bin/tibet-run $identity --cipher $cipher --budget $(( size_mb / 2 ))M --
    run_model=$sealed run_load=read run "sealed, load_mode NONE (fread), budget $(( size_mb + 64 ))M" $cipher out/bin/tibet-run $identity --cipher $cipher --budget $(( size_mb + 64 ))M --
  done
)
rm -f $sealed
report=$(cat <<REPORT
$(cat $work/shuttle.md)

## llama.cpp on the same model

Our C driver (tests/integration/native/llama/llama_driver.c, llama.cpp from npm @node-llama-cpp/linux-x64@3.22.1), mmap load,
greedy decoding of $tokens tokens from "Hello", natively and under tibet-run with each page cipher (--cipher).
Equal hashes mean identical tokens. Target (docs/background.md): tokens/s once resident >= 0.97x native.

| run | cipher | load ms | tokens/s | token hash |
|---|---|--:|--:|---|
$rows

## The same model sealed

\`tibet seal\` to one identity: $seal_line. Under tibet-run with that identity and a valid claim, the mmap load
reads each page's ciphertext from the file and decrypts it on first touch (no import); load_mode NONE reads the
weights with fread, which tibet answers with decrypted bytes. The file stays AES-256-GCM; the cipher column is the
page cipher (--cipher) that seals the pages in RAM. Equal hashes to the native run mean identical tokens.

| run | cipher | load ms | tokens/s | token hash |
|---|---|--:|--:|---|
$sealed_rows
REPORT
)
echo "$report"
[ -z "$out" ] || echo "$report" > "$out"
