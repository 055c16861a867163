#!/usr/bin/env bash
# Builds qat and its tests with ASan and UBSan (scripts/build-san.sh) and
# runs the whole test suite there; a sanitizer report fails the test that
# triggered it (docs/reliability.md has the measured cost).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-san.sh
# Leaks allocated inside LibTorch are suppressed (scripts/lsan.supp).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
# cli.demo_quick is left out: it is the main job on a few batches, runs the
# same kernels as the unit tests, and at ASan's 3x cost would take longer
# than all the rest together.
ctest --test-dir build-san --output-on-failure --timeout 900 -j1 -E '^cli\.demo_quick$'
