#!/usr/bin/env bash
# Installs everything qat needs on a fresh Debian 12 machine: the compilers
# (g++; clang for the sanitizer and fuzzing builds) and build tools, LibTorch
# and the other -dev packages, the data packages (Fashion-MNIST, ONNX
# backend test data), and a Python venv in .venv with the validation tools
# (onnx, onnxruntime, openvino). Safe to re-run: it only installs what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cmake ninja-build g++ pkg-config zlib1g-dev
  clang libclang-rt-14-dev libomp-14-dev
  libtorch-dev libonnx-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libonnx-testdata dataset-fashion-mnist
  python3 python3-venv python3-torch python3-torchvision
)
# Pinned so that validation results are reproducible.
PIP_PACKAGES=(numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 openvino==2026.4.1)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The venv uses Debian's interpreter so that it matches python3-torch's ABI
# for the fixture scripts; a stamp file records what was installed.
stamp=".venv/.qat-packages"
if [[ ! -f $stamp || "$(cat "$stamp")" != "${PIP_PACKAGES[*]}" ]]; then
  echo "setup: creating .venv with ${PIP_PACKAGES[*]}"
  /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
  echo "${PIP_PACKAGES[*]}" > "$stamp"
fi
