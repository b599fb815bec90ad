"""Image checks for tests: a written PNG must decode, have the expected size and show something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def assert_png(
    path: Path,
    *,
    size: tuple[int, int] | None = None,
    min_size: tuple[int, int] = (16, 16),
    min_colours: int = 3,
) -> np.ndarray:
    """Decode ``path`` fully and return its pixels.

    Fails (naming the file) unless it is a PNG, decodes without error, is exactly ``size``
    (``(width, height)``) when given or at least ``min_size``, and is not blank: at least
    ``min_colours`` distinct pixel values (a plot with axes, text and a curve has far more).
    """
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path}: {im.format}, not PNG"
        im.load()  # decodes every byte: a truncated or damaged file raises here
        width, height = im.size
        pixels = np.asarray(im.convert("RGBA"))
    if size is not None:
        assert (width, height) == size, f"{path}: {width}x{height}, expected {size[0]}x{size[1]}"
    else:
        assert width >= min_size[0] and height >= min_size[1], f"{path}: only {width}x{height}"
    colours = len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
    assert colours >= min_colours, f"{path}: {colours} distinct colour(s), a blank image"
    return pixels
