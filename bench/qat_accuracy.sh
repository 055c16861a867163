#!/usr/bin/env bash
# The QAT accuracy matrix for one model: PTQ and QAT (without and with
# range learning) at W8A8, W4A8 and W4A4, from one FP32 checkpoint.
# Prints markdown table rows; every row comes from one `qat qat` run whose
# full command is printed above the table.
#   bench/qat_accuracy.sh MODEL FP32_CHECKPOINT QAT_EPOCHS [W/A ...]
# e.g. bench/qat_accuracy.sh resnet20 runs/fp32/checkpoint.pt 1 8/8 4/8 4/4
# QAT_BIN overrides the binary (copy it away when builds run meanwhile);
# each run's full output goes to runs/qat_accuracy/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 checkpoint=$2 epochs=$3
shift 3
configs=("$@")
[[ $# -gt 0 ]] || configs=(8/8 4/8 4/4)
qat=${QAT_BIN:-build/qat}
mkdir -p runs/qat_accuracy
rows=()
for bits in "${configs[@]}"; do
  bits=${bits/\// }
  read -r w a <<< "$bits"
  lr=1e-3
  [[ $w -lt 8 || $a -lt 8 ]] && lr=5e-3
  for variant in "" "--range-learning"; do
    cmd="$qat qat --model $model --checkpoint $checkpoint --w-bits $w --a-bits $a $variant \
--epochs $epochs --lr $lr --schedule step --step-epochs 1 --freeze-bn-epoch 1 --no-progress"
    echo "\$ $cmd" >&2
    start=$(date +%s)
    log=runs/qat_accuracy/${model}_w${w}a${a}${variant:+_rl}.log
    $cmd > "$log" 2>&1 || { echo "failed, see $log" >&2; exit 1; }
    line=$(grep '^FP32' "$log")
    secs=$(( $(date +%s) - start ))
    # "FP32 91.23%  ->  PTQ W8A8 91.00%  ->  QAT 91.30% (with range learning)"
    read -r fp32 ptq q <<< "$(echo "$line" | sed -E 's/FP32 ([0-9.]+)%.*PTQ [^ ]+ ([0-9.]+)%.*QAT ([0-9.]+)%.*/\1 \2 \3/')"
    rl=$([[ -n $variant ]] && echo yes || echo no)
    rows+=("| $model | W${w}A${a} | $fp32 | $ptq | $rl | $q | $(awk "BEGIN{printf \"%+.2f\", $q-$fp32}") | ${secs}s |")
  done
done
echo "| model | bits | FP32 % | PTQ % | range learning | QAT % | QAT - FP32 (pp) | wall |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
