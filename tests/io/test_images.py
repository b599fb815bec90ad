"""Image reading: crop window, channel replication, clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from babelrs_core.io.images import ImageReadError, load_image


def test_grayscale_is_replicated_and_cropped(tmp_path: Path) -> None:
    arr = np.zeros((40, 50), np.uint8)
    arr[10:30, 5:45] = np.arange(40, dtype=np.uint8)[None, :]
    Image.fromarray(arr).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png", crop_x=5, crop_y=10, width=40, height=20)
    assert out.shape == (20, 40, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 2]).all()
    assert out[0, :, 0].tolist() == list(range(40))


def test_missing_corrupt_and_too_small_images_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.png: image file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"bad\.png: cannot decode"):
        load_image(tmp_path / "bad.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(ImageReadError, match=r"s\.png: decoded size 8x8 is smaller"):
        load_image(tmp_path / "s.png", width=16, height=16)
