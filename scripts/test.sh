#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test against the
# real kernel. Needs root (or vm.unprivileged_userfaultfd=1) for userfaultfd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The interposer tests run the installed tree (out/bin/tibet-run, out/lib/libtibet.so).
bash scripts/build.sh

results=$(mktemp -d)
status=0
dotnet test TibetKernel.sln -c Release --no-restore \
  --logger "trx;LogFileName=results.trx" \
  --results-directory "$results" 2>&1 | tee "$results/log.txt" || status=$?

# One closing line for CI, summed over the test assemblies.
sum() { { grep -oE "^(Passed|Failed)!? +- +Failed: +[0-9]+, Passed: +[0-9]+" "$results/log.txt" || true; } \
  | awk -v f="$1" '{ gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == f":") t += $(i + 1) } END { print t + 0 }'; }
passed=$(sum Passed)
failed=$(sum Failed)
echo "tests: $passed passed, $failed failed"
if [ "$passed" -eq 0 ] && [ $status -eq 0 ]; then
  echo "test.sh: no test ran" >&2
  exit 1
fi
exit $status
