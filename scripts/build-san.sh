#!/usr/bin/env bash
# Configures and builds qat with clang, AddressSanitizer, UBSan and the
# libFuzzer targets in build-san/. Arguments are ninja targets (default: all).
# -O1 keeps the instrumented tests fast enough; line tables symbolize reports.
# No precompiled headers: Debian's clang 14 segfaults compiling
# tests/train/trainer_test.cpp against the shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-san -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only" -DQAT_SANITIZE=ON -DQAT_FUZZ=ON -DQAT_BUILD_BENCH=OFF \
  -DCMAKE_DISABLE_PRECOMPILE_HEADERS=ON > /dev/null
ninja -C build-san "$@"
