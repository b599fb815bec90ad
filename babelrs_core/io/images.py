"""Read images as the model sees them: decoded, border-cropped, three channels."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from babelrs_core.errors import BadInputError


class ImageReadError(BadInputError):
    """An image file is missing, unreadable or smaller than its manifest says."""


def decode_image(source: str | os.PathLike[str] | bytes, name: str | None = None) -> np.ndarray:
    """Decode a file (path) or its bytes to a ``(H, W, 3)`` uint8 array; errors name ``name``
    (default: the path). Grayscale SAR / IR images are replicated to three channels."""
    label = name or str(source if not isinstance(source, bytes) else "<bytes>")
    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with Image.open(fp) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(f"{label}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"{label}: cannot decode image ({exc})") from None


def crop_window(
    arr: np.ndarray,
    name: str,
    crop_x: int = 0,
    crop_y: int = 0,
    width: int | None = None,
    height: int | None = None,
) -> np.ndarray:
    """The manifest's window of a decoded image (contiguous); an error naming ``name`` when the
    image is smaller than the window."""
    h = arr.shape[0] - crop_y if height is None else height
    w = arr.shape[1] - crop_x if width is None else width
    if crop_y + h > arr.shape[0] or crop_x + w > arr.shape[1]:
        raise ImageReadError(
            f"{name}: decoded size {arr.shape[1]}x{arr.shape[0]} is smaller than the manifest's "
            f"window {w}x{h} at offset ({crop_x}, {crop_y})"
        )
    return np.ascontiguousarray(arr[crop_y : crop_y + h, crop_x : crop_x + w])


def load_image(
    path: str | os.PathLike[str],
    crop_x: int = 0,
    crop_y: int = 0,
    width: int | None = None,
    height: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to a ``(H, W, 3)`` uint8 array, cropped to the manifest's window.

    Grayscale SAR / IR files are replicated to three channels. Errors name the file.
    """
    return crop_window(decode_image(path), str(path), crop_x, crop_y, width, height)
