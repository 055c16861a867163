#!/usr/bin/env bash
# The main job: installs what is missing, builds, runs the end-to-end
# Fashion-MNIST QAT demo (FP32 -> PTQ -> QAT -> ONNX export), then
# validates the exported INT8 model in ONNX Runtime and OpenVINO against
# the simulation. The whole report lands in runs/demo/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
start=$(date +%s)
build/qat demo --dir runs/demo
echo >> runs/demo/report.md
echo "== 5. Validate runs/demo/export_resnet20/model_int8.onnx in ONNX Runtime and OpenVINO"
.venv/bin/python bench/deploy_bench.py runs/demo/export_resnet20 --rounds 1 --latency-runs 20 --batches 3 \
  | tee -a runs/demo/report.md
echo "demo wall time (after the build): $(( $(date +%s) - start )) s" | tee -a runs/demo/report.md
