#!/usr/bin/env bash
# GPU check, detector rows (see bench/gpu_detector.py): run from the repo root on a CUDA machine
# with torch and nvcc. .gpuwheels/ holds the wheels the machine lacks (bench/gpu_env.sh) and the
# onedl-mmcv sdist, built here into .gpubuild/ when mmcv's ops are missing. GPU_CHECK_DEADLINE
# (default 500) is the whole command's budget in seconds, counted from this script's start; the
# Python side stops starting runs before it and stops the build; `timeout` is the backstop.
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_CHECK_START=${GPU_CHECK_START:-$(date +%s)}
export GPU_CHECK_DEADLINE=${GPU_CHECK_DEADLINE:-500}
mkdir -p .gpubuild
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 1
left=$((GPU_CHECK_DEADLINE - ($(date +%s) - GPU_CHECK_START)))
echo "gpu_detector: wheels ready after $(($(date +%s) - GPU_CHECK_START)) s, ${left} s left"
exec timeout -k 10 $((left + 25)) "$PY" bench/gpu_detector.py
