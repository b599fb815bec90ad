# Sourced by bench/gpu_check.sh and bench/gpu_detector.sh on a GPU machine (from the repo root):
# offline settings, and the wheels in .gpuwheels/ (what the machine's image lacks) installed with
# --no-deps into .gpubuild/site (git-ignored, kept while the machine stays warm: a second call
# skips the install) and put on PYTHONPATH, so the image's own torch stays untouched.
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
if compgen -G ".gpuwheels/*.whl" >/dev/null; then
  GPU_SITE="$PWD/.gpubuild/site"
  stamp=$(stat -c '%n %s' .gpuwheels/*.whl | md5sum | cut -c1-16)
  if [ "$(cat "$GPU_SITE/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$GPU_SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$GPU_SITE" \
      .gpuwheels/*.whl || return 1
    echo "$stamp" >"$GPU_SITE/.stamp"
  fi
  export PYTHONPATH="$GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .gpuwheels/site ]; then export PYTHONPATH="$PWD/.gpuwheels/site${PYTHONPATH:+:$PYTHONPATH}"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
