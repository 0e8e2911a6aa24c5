#!/usr/bin/env bash
# Builds the install tree in out/: out/bin holds the commands, out/lib/tibet what they
# run. The tree is relocatable: the commands find their files relative to themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf out
dotnet publish bench/Tibet.Bench/Tibet.Bench.csproj -c Release --no-self-contained \
  -o out/lib/tibet --verbosity quiet -p:DebugType=none
mkdir -p out/bin
cat > out/bin/tibet-bench <<'WRAPPER'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
exec dotnet "$here/../lib/tibet/tibet-bench.dll" "$@"
WRAPPER
chmod +x out/bin/tibet-bench
echo "built: out/bin/tibet-bench"
