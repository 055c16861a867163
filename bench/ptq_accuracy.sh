#!/usr/bin/env bash
# The PTQ start matrix for one model: min-max calibration alone and with
# each PTQ pass (Sequential MSE, AdaRound, CLE), at each W/A bitwidth.
# Prints markdown table rows; every command is printed to stderr.
#   bench/ptq_accuracy.sh MODEL FP32_CHECKPOINT ADAROUND_ITERS [W/A ...]
# e.g. bench/ptq_accuracy.sh resnet8 runs/fp32/checkpoint.pt 2000 4/8 4/4
# QAT_BIN overrides the binary; QAT_THREADS the thread count (default 1);
# each run's output goes to runs/ptq_accuracy/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 checkpoint=$2 iters=$3
shift 3
configs=("$@")
[[ $# -gt 0 ]] || configs=(4/8 4/4)
qat=${QAT_BIN:-build/qat}
threads=${QAT_THREADS:-1}
mkdir -p runs/ptq_accuracy
variants=("" "--seq-mse" "--adaround --adaround-iters $iters" "--cle" "--cle --seq-mse")
echo "| model | bits | start | PTQ top-1 | pass time | wall |"
echo "|---|---|---|---|---|---|"
for bits in "${configs[@]}"; do
  read -r w a <<< "${bits/\// }"
  for variant in "${variants[@]}"; do
    cmd="$qat --threads $threads ptq --model $model --checkpoint $checkpoint --w-bits $w --a-bits $a $variant"
    echo "\$ $cmd" >&2
    log=runs/ptq_accuracy/${model}_w${w}a${a}$(echo "$variant" | tr -d ' -').log
    start=$(date +%s)
    $cmd > "$log" 2>&1 || { echo "failed, see $log" >&2; exit 1; }
    secs=$(( $(date +%s) - start ))
    ptq=$(grep '^FP32' "$log" | sed -E 's/.*PTQ [^ ]+ ([0-9.]+)%.*/\1/')
    pass=$(grep -E '^(seq-mse|adaround):' "$log" | sed -E 's/^([a-z-]+):.* ([0-9.]+) s$/\1 \2 s/' | paste -sd ',' - || true)
    echo "| $model | W${w}A${a} | min-max ${variant:-} | $ptq% | ${pass:--} | ${secs}s |"
  done
done
