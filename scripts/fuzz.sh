#!/usr/bin/env bash
# Fuzzes one parser of Tibet.Core with AFL++ for a given time:
#   scripts/fuzz.sh TARGET SECONDS        TARGET: gguf seal claim identity audit
# Installs AFL++ (Debian afl++) and the sharpfuzz instrumenter if they are missing,
# builds tests/fuzz/Tibet.Fuzz, instruments a private copy of its Tibet.Core.dll,
# and runs afl-fuzz on the seed corpus (tests/fuzz/corpus/TARGET plus the crash
# regressions in tests/fuzz/regressions/TARGET), with the AFL++ dictionary
# tests/fuzz/dict/TARGET.dict. FUZZ_CONTINUE=1 also seeds it with the queue the
# previous run of TARGET left in out/fuzz/TARGET. Everything it writes is under
# out/fuzz/TARGET; out/fuzz/TARGET/summary.json holds the figures it prints.
# Exits 1 when AFL++ saved a crash or a hang: replay each file with
#   dotnet out/fuzz/TARGET/bin/Tibet.Fuzz.dll replay TARGET FILE
# Several targets may run at once (the build is serialised by a lock). On a shared
# machine run it under `nice -n 19`.
set -euo pipefail
cd "$(dirname "$0")/.."

targets="gguf seal claim identity audit"
sharpfuzz_version=2.3.0
if [ $# -ne 2 ] || ! [[ " $targets " == *" $1 "* ]] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh TARGET SECONDS   (TARGET: ${targets// /, }; SECONDS: a positive whole number)" >&2
  exit 2
fi
target=$1
seconds=$2
root=$PWD
work=$root/out/fuzz/$target
mkdir -p "$root/out/fuzz"

# --- AFL++ -------------------------------------------------------------------------
if ! command -v afl-fuzz >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "fuzz.sh: afl-fuzz is missing and installing it (apt-get install afl++) needs root; run as root or install afl++ first." >&2
    exit 1
  fi
  echo "fuzz.sh: installing afl++ (Debian package) ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++ >/dev/null
fi

# --- build, instrumenter, private instrumented copy (under one lock) ----------------
tools=$root/out/fuzz/tools
(
  flock 9
  if [ ! -x "$tools/sharpfuzz" ]; then
    echo "fuzz.sh: installing the sharpfuzz instrumenter (dotnet tool SharpFuzz.CommandLine $sharpfuzz_version) ..."
    dotnet tool install SharpFuzz.CommandLine --version "$sharpfuzz_version" --tool-path "$tools" >/dev/null
  fi
  dotnet publish tests/fuzz/Tibet.Fuzz/Tibet.Fuzz.csproj -c Release -o "$root/out/fuzz/publish" --nologo -v quiet >/dev/null
  rm -rf "$work/bin"
  mkdir -p "$work"
  cp -r "$root/out/fuzz/publish" "$work/bin"
) 9>"$root/out/fuzz/build.lock"
# Only tibet's own parsers are instrumented: coverage of the runtime or of NSec would
# only dilute the map.
"$tools/sharpfuzz" "$work/bin/Tibet.Core.dll" >/dev/null

# --- seeds: the corpus, every crash regression, and on request the last queue ----------
rm -rf "$work/in"
mkdir -p "$work/in"
continued=false
if [ "${FUZZ_CONTINUE:-0}" = 1 ] && [ -d "$work/findings/default/queue" ]; then
  find "$work/findings/default/queue" -maxdepth 1 -type f -exec cp {} "$work/in/" \;
  continued=true
fi
rm -rf "$work/findings"
cp tests/fuzz/corpus/"$target"/* "$work/in/"
if [ -d "tests/fuzz/regressions/$target" ] && [ -n "$(ls -A "tests/fuzz/regressions/$target")" ]; then
  cp tests/fuzz/regressions/"$target"/* "$work/in/"
fi

# --- run ------------------------------------------------------------------------------
# AFL_SKIP_BIN_CHECK: the program is `dotnet`, whose instrumentation lives in the
#   managed Tibet.Core.dll, not in the ELF file AFL would inspect.
# AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES: AFL wants core_pattern not to pipe cores to a
#   handler (apport, systemd-coredump) because that delays crash reports; SharpFuzz's
#   fork server reports crashes itself, so the setting does not matter and no system
#   setting is changed.
# AFL_SKIP_CPUFREQ: the CPU governor is the host's on a VM; AFL_NO_AFFINITY: cores are
#   shared with other work, so no instance pins one.
# -t 5000: a parse that takes 5 s is a hang (a normal one takes well under a millisecond;
#   the margin absorbs the first, JIT-compiling runs and a loaded machine).
export AFL_SKIP_BIN_CHECK=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
dictionary=()
if [ -f "tests/fuzz/dict/$target.dict" ]; then dictionary=(-x "tests/fuzz/dict/$target.dict"); fi
echo "fuzz.sh: fuzzing '$target' for $seconds s, $(ls "$work/in" | wc -l) seeds (log: $work/afl.log) ..."
status=0
timeout --signal=INT $((seconds + 120)) \
  afl-fuzz -V "$seconds" -t 5000 -m none "${dictionary[@]}" -i "$work/in" -o "$work/findings" -- dotnet "$work/bin/Tibet.Fuzz.dll" "$target" \
  >"$work/afl.log" 2>&1 || status=$?
stats=$work/findings/default/fuzzer_stats
if [ ! -f "$stats" ]; then
  echo "fuzz.sh: afl-fuzz did not start (exit status $status); the end of its log:" >&2
  tail -n 30 "$work/afl.log" >&2
  exit 1
fi

stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
execs=$(stat execs_done)
run_time=$(stat run_time)
corpus=$(stat corpus_count)
crashes=$(stat saved_crashes)
hangs=$(stat saved_hangs)
per_second=$(awk -v e="$execs" -v t="$run_time" 'BEGIN { printf "%.1f", (t > 0 ? e / t : 0) }')
cat >"$work/summary.json" <<EOF
{"target": "$target", "seconds": $run_time, "executions": $execs, "execs_per_second": $per_second, "seeds": $(ls "$work/in" | wc -l), "continued_from_last_queue": $continued, "dictionary": $([ ${#dictionary[@]} -gt 0 ] && echo true || echo false), "corpus_count": $corpus, "edges_found": $(stat edges_found), "stability": "$(stat stability)", "unique_crashes": $crashes, "unique_hangs": $hangs, "afl_version": "$(stat afl_version)"}
EOF
echo "fuzz.sh: $target: $execs executions in $run_time s ($per_second/s), corpus $corpus, crashes $crashes, hangs $hangs"
if [ "$crashes" -ne 0 ] || [ "$hangs" -ne 0 ]; then
  echo "fuzz.sh: inputs saved in $work/findings/default/crashes and .../hangs; replay one with" >&2
  echo "  dotnet $work/bin/Tibet.Fuzz.dll replay $target FILE" >&2
  exit 1
fi
