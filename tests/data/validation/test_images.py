"""The image suite over the per-image facts (babelrs_core/data/validation/images.py): one test
per kind of bad image file, each naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from babelrs_core.data.integrity import content_changed
from babelrs_core.data.validation.images import inspect_image
from babelrs_core.io.hashing import file_sha256
from tests.data import fake_data
from tests.data.validation.support import Data, failure, named


def test_truncated_image(data: Data) -> None:
    image = data.roots["dota"] / "train/images/Pt000.png"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    f = failure(data.fails(), "image_decodes")
    assert "truncated" in named(f, "Pt000.png", "does not decode")


def test_missing_image_file(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/train/t00001.png"
    image.unlink()
    f = failure(data.fails(), "image_exists")
    named(f, "t00001.png", "missing image")
    assert f.count == 1


def test_wrong_channel_count(data: Data) -> None:
    image = data.roots["dota"] / "train/images/Pt001.png"
    fake_data.noise_image(image, fake_data.SIZES["dota"], "RGBA", seed=5)
    f = failure(data.fails(), "image_channels")
    named(f, "Pt001.png", "wrong channel count: 4", "rgb images must have 3")


def test_constant_image(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/val/v00000.png"
    Image.new("L", fake_data.SIZES["sardet"], 128).save(image)
    f = failure(data.fails(), "image_not_constant")
    named(f, "v00000.png", "constant image")


def test_decoded_size_differs_from_manifest(data: Data) -> None:
    image = data.roots["dota"] / "val/images/Pv000.png"
    fake_data.noise_image(image, (70, 64), "RGB", seed=3)
    f = failure(data.fails(), "image_size_matches.width")
    named(f, "Pv000.png", "decoded size 70x64", "64x64")


def test_wrong_dtype(data: Data) -> None:
    image = data.roots["sardet"] / "JPEGImages/train/t00000.png"
    arr = np.random.default_rng(0).integers(0, 60000, (48, 64), dtype=np.uint16)
    Image.fromarray(arr).save(image)  # 16-bit grayscale PNG
    f = failure(data.fails(), "image_dtype")
    named(f, "t00000.png", "uint16", "sar images must be uint8")


def test_inspect_image_never_raises(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image")
    facts = inspect_image(str(tmp_path / "junk.png"), 0, 0, 4, 4)
    assert facts["exists"] and facts["decodes"] is False and facts["error"]
    assert inspect_image(str(tmp_path / "nope.png"), 0, 0, 4, 4)["exists"] is False


def test_changed_bytes(data: Data) -> None:
    """One bit flipped in a JPEG: it still decodes with the right size, channels and dtype; only
    the sha256 the manifest recorded catches it (the words are babelrs_core.data.integrity's, as
    in the training stages' pre-check)."""
    image = data.roots["dronevehicle"] / "train/trainimgr/00001.jpg"
    want = file_sha256(image)
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    image.write_bytes(bytes(raw))
    report = data.fails()
    assert [f.check for f in report.failures] == ["image_content_unchanged"]
    example = named(failure(report, "image_content_unchanged"), "trainimgr/00001.jpg")
    assert example.endswith(
        f"(dronevehicle/train/00001): {content_changed(file_sha256(image), want)} "
        "(re-import, or restore the file)"
    )
