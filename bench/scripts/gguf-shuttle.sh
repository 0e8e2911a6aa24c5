#!/usr/bin/env bash
# gguf-shuttle: a ~1 GiB generated llama model through tibet, beside native, in one run.
#  1. tibet-bench gguf-shuttle: import MB/s and page-by-page read MB/s, p50/p99, from
#     64 MiB up to the whole model, against a plain map of the file.
#  2. llama.cpp (our C driver, mmap load): load time and tokens/s natively, and under
#     tibet-run with a budget that holds the whole model and with one that holds half.
# Usage: bench/scripts/gguf-shuttle.sh [markdown-output]
#        (needs scripts/build.sh and scripts/install-llama.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-}
tokens=${TIBET_BENCH_TOKENS:-16}
llama=.tools/llama
model=.tools/tmp/gguf-shuttle-large.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for tool in out/bin/tibet-run out/bin/tibet-bench out/bin/tibet-gguf-gen; do
  [ -x $tool ] || { echo "gguf-shuttle.sh: $tool is missing; run scripts/build.sh" >&2; exit 1; }
done
[ -f $llama/include/llama.h ] || { echo "gguf-shuttle.sh: llama.cpp is missing; run scripts/install-llama.sh" >&2; exit 1; }

mkdir -p .tools/tmp
[ -f $model ] || out/bin/tibet-gguf-gen --preset large --out $model >/dev/null
driver=$work/llama_driver
gcc -O2 -o $driver tests/integration/native/llama/llama_driver.c -I$llama/include -L$llama/lib -Wl,-rpath,"$(pwd)/$llama/lib" -lllama -lggml
size_mb=$(( $(stat -c %s $model) / 1048576 ))

out/bin/tibet-bench gguf-shuttle --model $model --markdown $work/shuttle.md >&2

field() { awk -v k="$1:" '$1 == k { print $2 }'; }
run() { # label, command prefix...
  local label=$1; shift
  "$@" $driver --model $model --tokens $tokens --load mmap > $work/run.txt
  printf '| %s | %s | %s | %s |\n' "$label" "$(field load_ms < $work/run.txt)" "$(field tokens_per_second < $work/run.txt)" "$(field hash < $work/run.txt)"
}
# The native run reads the model through the page cache; warm it, so that both sides
# are measured "once resident" (tibet's import drops the file's cached pages).
cat $model > /dev/null
rows=$(
  run "native (page cache warm)" env
  run "tibet-run, budget $(( size_mb + 64 ))M (the whole model)" out/bin/tibet-run --budget $(( size_mb + 64 ))M --
  run "tibet-run, budget $(( size_mb / 2 ))M (half the model)" out/bin/tibet-run --budget $(( size_mb / 2 ))M --
)
report=$(cat <<REPORT
$(cat $work/shuttle.md)

## llama.cpp on the same model

Our C driver (tests/integration/native/llama/llama_driver.c, llama.cpp from npm @node-llama-cpp/linux-x64@3.22.1), mmap load,
greedy decoding of $tokens tokens from "Hello", natively and under tibet-run. Equal hashes mean identical tokens.
Target (BRIEF §6): tokens/s once resident >= 0.97x native.

| run | load ms | tokens/s | token hash |
|---|--:|--:|---|
$rows
REPORT
)
echo "$report"
[ -z "$out" ] || echo "$report" > "$out"
