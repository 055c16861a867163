#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the end-to-end
# Fashion-MNIST QAT demo. Arguments are passed to `qat demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/qat demo "$@"
