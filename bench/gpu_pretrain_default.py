"""The pretraining stage with the default params.yaml on a CUDA machine (``device: auto``).

Generates and imports SOI-mini into a temporary folder, runs ``stages.pretrain`` exactly as the
pipeline does, and writes the output folder (encoder weights, encoder.json, metrics.json,
predictions) to ``$OUT/pretrain`` so the result can be brought back and reported
(``babelrs results pretrain <metrics.json> docs/results.md``).

Usage on the lent GPU machine (see bench/gpu_check.sh for the offline wheels)::

    python3 bench/gpu_pretrain_default.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from babelrs_core.settings_env import offline_by_default  # noqa: E402

offline_by_default()

from babelrs_core import stages  # noqa: E402
from babelrs_core.config import load_params  # noqa: E402


def main() -> None:
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="pretrain_default_"))
    work = Path(tempfile.mkdtemp(prefix="soi_mini_"))
    over = {
        "paths.raw": str(work / "raw"),
        "paths.manifest": str(work / "manifest.parquet"),
        "paths.pretrain_out": str(out / "pretrain"),
    }
    params = load_params(ROOT / "params.yaml", over)
    t0 = time.perf_counter()
    stages.generate(params, progress=False)
    stages.import_data(params, progress=False)
    t1 = time.perf_counter()
    summary = stages.pretrain(params)
    t2 = time.perf_counter()
    print(json.dumps(summary, indent=1, default=str))
    print(f"data {t1 - t0:.0f} s, pretraining {t2 - t1:.0f} s")


if __name__ == "__main__":
    main()
