#!/usr/bin/env bash
# The README's main job on a few batches per epoch: every stage runs (FP32,
# PTQ, QAT, export) and the exported INT8 model runs in ONNX Runtime and
# OpenVINO through bench/deploy_bench.py, as scripts/demo.sh does.
#   demo_quick_test.sh QAT_BINARY VENV_PYTHON SOURCE_DIR
set -euo pipefail
qat=$1 python=$2 source_dir=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$qat" --threads 2 demo --dir "$dir" --fp32-epochs 1 --qat-epochs 1 --steps-per-epoch 3 --no-progress > "$dir/log" 2>&1 \
  || { cat "$dir/log"; exit 1; }
fail() { echo "FAIL: $*"; cat "$dir/log"; exit 1; }
for row in "| FP32 |" "| PTQ | W8A8 |" "| PTQ | W4A8 |" "| PTQ | W4A4 |" "| QAT | W8A8 |" "| QAT | W4A4 |"; do
  grep -qF "$row" "$dir/report.md" || fail "report.md lacks the row '$row'"
done
export_dir=$dir/export_resnet20
for file in model_fp32.onnx model_int8.onnx encodings.json sim_test_logits.pb; do
  [[ -s $export_dir/$file ]] || fail "export lacks $file"
done
"$python" "$source_dir/bench/deploy_bench.py" "$export_dir" --rounds 1 --latency-runs 2 --batches 1 > "$dir/deploy" \
  || fail "deploy_bench.py failed"
grep -q "| resnet20 | ONNX Runtime | INT8 |" "$dir/deploy" || fail "no ONNX Runtime INT8 row: $(cat "$dir/deploy")"
grep -q "| resnet20 | OpenVINO | INT8 |" "$dir/deploy" || fail "no OpenVINO INT8 row: $(cat "$dir/deploy")"
echo "demo quick check passed"
