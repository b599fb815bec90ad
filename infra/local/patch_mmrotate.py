"""Remove onedl-mmrotate's one torchvision import (the only patch babelrs applies to a dependency).

Why: onedl-mmrotate 1.2.1 imports torchvision when ``mmrotate.models`` is imported, only so that the
H2RBox-v2 detector can flip a tensor vertically. PyPI's torchvision does not import beside the CPU
build of torch 2.13.0 (``operator torchvision::nms does not exist``), so we replace
``transforms.functional.vflip(x)`` by the identical ``x.flip(-2)`` and drop the import. Idempotent;
exits non-zero, naming the file, if the installed mmrotate no longer looks as expected.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

IMPORT = "from torchvision import transforms\n"
CALL = "transforms.functional.vflip(batch_inputs)"
PATCHED_CALL = "batch_inputs.flip(-2)  # babelrs patch: was torchvision vflip"


def target() -> Path:
    spec = importlib.util.find_spec("mmrotate")
    if spec is None or spec.origin is None:
        sys.exit("patch_mmrotate: mmrotate is not installed in this environment")
    return Path(spec.origin).parent / "models" / "detectors" / "h2rbox_v2.py"


def patch(path: Path) -> str:
    text = path.read_text()
    if PATCHED_CALL in text and IMPORT not in text:
        return "already patched"
    if IMPORT not in text or CALL not in text:
        sys.exit(f"patch_mmrotate: {path} no longer matches the expected source; update the patch")
    path.write_text(text.replace(IMPORT, "").replace(CALL, PATCHED_CALL))
    return "patched"


if __name__ == "__main__":
    p = target()
    print(f"patch_mmrotate: {p}: {patch(p)}")
