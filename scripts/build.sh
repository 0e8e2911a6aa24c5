#!/usr/bin/env bash
# Builds the install tree in out/:
#   out/bin/tibet-run, out/bin/tibet          commands (shell wrappers): the launcher, and
#                                             identities, claims, sealed models, audit
#   out/bin/tibet-bench, out/bin/tibet-gguf-gen  benchmarks and the test-model generator
#   out/lib/libtibet.so, out/lib/libsodium.so the interposer and its private libsodium
#   out/lib/tibet/                            the managed programs the wrappers run
# The tree is relocatable: everything is found relative to the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf out
mkdir -p out/bin out/lib/tibet

dotnet publish src/Interposer/Tibet.Interposer.csproj -c Release -o out/lib/native-publish --verbosity quiet
cp out/lib/native-publish/libtibet.so out/lib/native-publish/libsodium.so out/lib/
rm -rf out/lib/native-publish

# ReadyToRun: the managed programs start from precompiled code. The custodian (tibet-run's
# forked half) decides access, opens sealed models and serves its first faults while the
# program starts; jitting all that on first use doubled llama.cpp's time to first token
# with a sealed model (590 ms against 300, bench/results/2026-12-06-sealed-install.md).
# All four projects alike: they share out/lib/tibet, and so Tibet.Core.dll.
for project in src/Launcher/Tibet.Launcher.csproj src/Launcher/Cli/Tibet.Cli.csproj \
               bench/Tibet.Bench/Tibet.Bench.csproj tools/Tibet.GgufGen/Tibet.GgufGen.csproj; do
  dotnet publish "$project" -c Release --no-self-contained -r linux-x64 -p:PublishReadyToRun=true \
    -o out/lib/tibet --verbosity quiet -p:DebugType=none
done

for command in tibet-run tibet tibet-bench tibet-gguf-gen; do
  cat > "out/bin/$command" <<WRAPPER
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")
exec dotnet "\$here/../lib/tibet/$command.dll" "\$@"
WRAPPER
  chmod +x "out/bin/$command"
done
echo "built: out/bin/tibet-run out/bin/tibet out/bin/tibet-bench out/bin/tibet-gguf-gen out/lib/libtibet.so"
