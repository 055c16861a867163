#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite; then the
# same suite under ASan+UBSan and each libFuzzer target for a bounded time
# (docs/reliability.md). QAT_SKIP_SANITIZERS=1 stops after the first part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 900 -j1
if [[ ${QAT_SKIP_SANITIZERS:-0} != 1 ]]; then
  scripts/sanitize.sh
  scripts/fuzz.sh
fi
