#!/bin/sh
# Peak RSS per qat_step variant as `/usr/bin/time -v` reports it ("Maximum
# resident set size"), one process per variant: a cross-check of the table
# mode of qat_step, which reads the same number from wait4().
#
#   bench/qat_step.sh BUILD_DIR [MODEL...]     (default: resnet20)
#   env: STEPS (12, warm-up included), THREADS (1), VARIANTS (fp32 qat qat_rl)
set -eu
build=${1:?usage: bench/qat_step.sh BUILD_DIR [MODEL...]}
shift
[ $# -gt 0 ] || set -- resnet20
bin=$build/bench/qat_step
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "| model | variant | ms/step | peak RSS MiB |"
echo "|---|---|---|---|"
for model in "$@"; do
  for variant in ${VARIANTS:-fp32 qat qat_rl}; do
    line=$(/usr/bin/time -v -o "$log" "$bin" --model "$model" --variant "$variant" \
      --steps "${STEPS:-12}" --threads "${THREADS:-1}")
    kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
    ms=$(echo "$line" | sed 's/.*ms_per_step=\([0-9.]*\).*/\1/')
    echo "| $model | $variant | $ms | $((kib / 1024)) |"
  done
done
