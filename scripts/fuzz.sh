#!/usr/bin/env bash
# Builds the libFuzzer targets (scripts/build-san.sh) and runs each for
# QAT_FUZZ_SECONDS (default 60) from its seed corpus in fuzz/corpus/. New
# inputs go to build-san/fuzz/corpus/, crashing ones to
# build-san/fuzz/artifacts/; any crash, sanitizer report or leak (bar those
# in scripts/lsan.supp) fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${QAT_FUZZ_SECONDS:-60}
targets=(onnx_import sim_config encodings checkpoint)
scripts/build-san.sh "${targets[@]/%/_fuzzer}"
mkdir -p build-san/fuzz/artifacts
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}
# A fuzzed attribute can ask for any tensor size. Beyond 2 GiB malloc fails
# as on a machine without that memory, and c10's "not enough memory" error
# must then surface as a named error like any other.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=2048}
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-san/fuzz/corpus/$t"
  log="build-san/fuzz/$t.log"
  # One thread: the fuzzers measure our code, not LibTorch's thread pool.
  if ! OMP_NUM_THREADS=1 QAT_NUM_THREADS=1 "build-san/fuzz/${t}_fuzzer" "build-san/fuzz/corpus/$t" "fuzz/corpus/$t" \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="build-san/fuzz/artifacts/${t}-" > "$log" 2>&1; then
    status=1
    echo "fuzz: $t FAILED, see $log"
    grep -m1 -A30 "ERROR\|fuzz: undocumented\|==.*==ERROR" "$log" || tail -30 "$log"
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t: $runs executions in ${seconds} s"
done
exit $status
