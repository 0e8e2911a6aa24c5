#!/usr/bin/env bash
# Builds the install tree in out/:
#   out/bin/tibet-run                         the launcher (a link to out/lib/tibet/tibet-run, native)
#   out/bin/tibet                             identities, claims, sealed models, audit (a shell wrapper)
#   out/bin/tibet-bench, out/bin/tibet-gguf-gen  benchmarks and the test-model generator
#   out/lib/libtibet.so, out/lib/libsodium.so the interposer and its private libsodium
#   out/lib/tibet/                            the launcher, and the managed programs the wrappers run
# The tree is relocatable: everything is found relative to the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf out
mkdir -p out/bin out/lib/tibet

dotnet publish src/Interposer/Tibet.Interposer.csproj -c Release -o out/lib/native-publish --verbosity quiet
cp out/lib/native-publish/libtibet.so out/lib/native-publish/libsodium.so out/lib/
rm -rf out/lib/native-publish

# tibet-run is compiled ahead of time (NativeAOT), like libtibet.so: its forked half, the
# custodian, decides access, opens sealed models and serves the program's first faults
# while the program starts. Jitted, that doubled llama.cpp's time to first token with a
# sealed model (590 ms against 300); ReadyToRun still left the custodian's first decision
# at 50-77 ms of the model's load, and tibet-run itself took 100-170 ms to start; ahead of
# time, 17 ms and 30 ms. The other programs are ReadyToRun (they share out/lib/tibet, and
# so Tibet.Core.dll).
rm -rf out/lib/tibet-run-publish
dotnet publish src/Launcher/Tibet.Launcher.csproj -c Release -r linux-x64 -p:PublishAot=true \
  -o out/lib/tibet-run-publish --verbosity quiet
mkdir -p out/lib/tibet
cp out/lib/tibet-run-publish/tibet-run out/lib/tibet-run-publish/libsodium.so out/lib/tibet/
rm -rf out/lib/tibet-run-publish
for project in src/Launcher/Cli/Tibet.Cli.csproj bench/Tibet.Bench/Tibet.Bench.csproj tools/Tibet.GgufGen/Tibet.GgufGen.csproj; do
  dotnet publish "$project" -c Release --no-self-contained -r linux-x64 -p:PublishReadyToRun=true \
    -o out/lib/tibet --verbosity quiet -p:DebugType=none
done

ln -sf ../lib/tibet/tibet-run out/bin/tibet-run
for command in tibet tibet-bench tibet-gguf-gen; do
  cat > "out/bin/$command" <<WRAPPER
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")
exec dotnet "\$here/../lib/tibet/$command.dll" "\$@"
WRAPPER
  chmod +x "out/bin/$command"
done
echo "built: out/bin/tibet-run out/bin/tibet out/bin/tibet-bench out/bin/tibet-gguf-gen out/lib/libtibet.so"
