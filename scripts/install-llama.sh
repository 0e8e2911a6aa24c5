#!/usr/bin/env bash
# Installs the prebuilt llama.cpp that the tests run natively and under tibet-run, into
# .tools/llama/ (git-ignored). Only npm is reachable from here, so both parts come from
# node-llama-cpp 3.22.1's packages:
#   lib/      libllama, libggml, libggml-base and every libggml-cpu-<variant>.so from
#             @node-llama-cpp/linux-x64, plus the libllama.so/libggml.so link names
#             that `gcc -lllama -lggml` needs (the sonames carry a version).
#   include/  llama.h and ggml's public headers, from the llama.cpp source that
#             node-llama-cpp ships as a git bundle (the exact source of those libraries).
# `npm pack` fetches just the two tarballs: no dependencies and no install scripts,
# which would try to download or build llama.cpp. Safe to run again: it skips a
# complete install.
set -euo pipefail
cd "$(dirname "$0")/.."

version=3.22.1
dest=.tools/llama
stamp="$dest/installed-version"

fail() { echo "install-llama: $*" >&2; exit 1; }

installed_is_complete() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] &&
    [ -e "$dest/lib/libllama.so" ] && [ -e "$dest/lib/libggml.so" ] && [ -e "$dest/lib/libggml-base.so" ] &&
    compgen -G "$dest/lib/libggml-cpu-*.so" >/dev/null &&
    [ -f "$dest/include/llama.h" ] && [ -f "$dest/include/ggml-backend.h" ]
}

if installed_is_complete; then
  echo "install-llama: llama.cpp from node-llama-cpp $version is already in $dest"
  exit 0
fi

for tool in npm git tar; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is missing; install it (Debian: apt-get install npm git tar)."
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "@node-llama-cpp/linux-x64@$version" "node-llama-cpp@$version" >/dev/null 2>"$work/npm.log") ||
  fail "npm pack of @node-llama-cpp/linux-x64@$version and node-llama-cpp@$version failed: $(tail -n 3 "$work/npm.log" | tr '\n' ' ')"

mkdir -p "$work/bins" "$work/source"
tar -xzf "$work/node-llama-cpp-linux-x64-$version.tgz" -C "$work/bins" --strip-components=3 package/bins/linux-x64 ||
  fail "@node-llama-cpp/linux-x64@$version has no bins/linux-x64 directory"
tar -xzf "$work/node-llama-cpp-$version.tgz" -C "$work" package/llama/gitRelease.bundle ||
  fail "node-llama-cpp@$version has no llama/gitRelease.bundle"
git clone --quiet "$work/package/llama/gitRelease.bundle" "$work/source" 2>"$work/git.log" ||
  fail "cloning llama/gitRelease.bundle failed: $(tail -n 3 "$work/git.log" | tr '\n' ' ')"

for lib in libllama.v0.5.0.so libggml.v0.5.0.so libggml-base.so; do
  [ -f "$work/bins/$lib" ] || fail "@node-llama-cpp/linux-x64@$version lacks $lib"
done
compgen -G "$work/bins/libggml-cpu-*.so" >/dev/null || fail "@node-llama-cpp/linux-x64@$version lacks the libggml-cpu-*.so backends"
[ -f "$work/source/include/llama.h" ] || fail "the llama.cpp bundle lacks include/llama.h"

rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/include"
cp "$work/bins/libllama.v0.5.0.so" "$work/bins/libggml.v0.5.0.so" "$work/bins/libggml-base.so" "$work/bins"/libggml-cpu-*.so "$dest/lib/"
ln -s libllama.v0.5.0.so "$dest/lib/libllama.so"
ln -s libggml.v0.5.0.so "$dest/lib/libggml.so"
cp "$work/source/include/llama.h" "$work/source/ggml/include"/*.h "$dest/include/"
git -C "$work/source" rev-parse HEAD > "$dest/llama.cpp-commit"
echo "$version" > "$stamp"

installed_is_complete || fail "the install in $dest is incomplete"
echo "install-llama: installed llama.cpp from node-llama-cpp $version (commit $(cat "$dest/llama.cpp-commit")) into $dest"
