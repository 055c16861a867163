#!/usr/bin/env bash
# QAT from each PTQ start, and selective QAT of the top-k sensitive layers
# against full QAT, at one bitwidth. Every run ends with BN re-estimation,
# so each row shows QAT accuracy before and after it. Prints markdown rows;
# every command is printed to stderr.
#   bench/ptq_qat.sh MODEL FP32_CHECKPOINT W/A EPOCHS ADAROUND_ITERS TOP_K
# e.g. bench/ptq_qat.sh resnet8 runs/fp32/checkpoint.pt 4/4 1 2000 3
# QAT_BIN overrides the binary; QAT_THREADS the thread count (default 1);
# each run's output goes to runs/ptq_qat/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 checkpoint=$2 bits=$3 epochs=$4 iters=$5 k=$6
read -r w a <<< "${bits/\// }"
qat=${QAT_BIN:-build/qat}
threads=${QAT_THREADS:-1}
mkdir -p runs/ptq_qat
variants=("" "--seq-mse" "--adaround --adaround-iters $iters" "--cle" "--top-k $k" "--range-learning")
echo "| model | bits | start / mode | PTQ | QAT | after BN re-estimation | epoch time | peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for variant in "${variants[@]}"; do
  cmd="$qat --threads $threads qat --model $model --checkpoint $checkpoint --w-bits $w --a-bits $a $variant \
--epochs $epochs --lr 5e-3 --schedule step --step-epochs 1 --freeze-bn-epoch 1 --bn-reestimate \
--bn-reestimate-batches 100 --no-progress"
  echo "\$ $cmd" >&2
  log=runs/ptq_qat/${model}_w${w}a${a}$(echo "$variant" | tr -d ' -').log
  /usr/bin/time -f 'peak_rss_kb %M' $cmd > "$log" 2>&1 || { echo "failed, see $log" >&2; exit 1; }
  read -r ptq q <<< "$(grep '^FP32' "$log" | sed -E 's/.*PTQ [^ ]+ ([0-9.]+)%.*QAT ([0-9.]+)%.*/\1 \2/')"
  re=$(grep '^BN re-estimation' "$log" | sed -E 's/.*: ([0-9.]+)%$/\1/')
  epoch=$(grep '^epoch' "$log" | tail -1 | sed -E 's/.*\(([^)]*)\)$/\1/')
  rss=$(grep '^peak_rss_kb' "$log" | awk '{printf "%.0f MiB", $2 / 1024}')
  echo "| $model | W${w}A${a} | ${variant:-min-max} | $ptq% | $q% | $re% | $epoch | $rss |"
done
