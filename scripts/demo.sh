#!/usr/bin/env bash
# The main demo: 64 pages of memory sealed, evicted and faulted back in, step by step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null
exec out/bin/tibet-bench spaceshuttle "$@"
