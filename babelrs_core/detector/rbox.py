"""Oriented-box conversions in mmrotate's ``le90`` convention (the reference's angle version).

* polygon: 8 values ``x1 y1 .. x4 y4`` in image pixels (y down). The manifest and DOTA list the
  corners **clockwise on screen** starting at the object's "head" corner; any start and either
  direction describe the same box here.
* rbox: ``(cx, cy, w, h, θ)``; θ in radians, positive = clockwise on screen (the x axis turned
  towards +y); ``le90``: ``w >= h`` (w is the long side) and ``θ ∈ [-π/2, π/2)``.

:func:`poly_to_rbox` is what the data pipeline uses for oriented ground truth (minimum-area
rectangle of the quadrilateral, as mmrotate's ``qbox2rbox``, then regularised to ``le90``);
:func:`rbox_to_poly` gives predicted polygons in the manifest's order: clockwise on screen,
starting at the box's ``(-w/2, -h/2)`` corner (the top-left one for θ = 0). Polygon areas and
enclosing horizontal boxes are in :mod:`babelrs_core.geometry`.
"""

from __future__ import annotations

import numpy as np
import torch

ANGLE_VERSION = "le90"


def poly_to_rbox(polys: np.ndarray | list) -> np.ndarray:
    """``(N, 8)`` polygons -> ``(N, 5)`` le90 rotated boxes (float32)."""
    from mmrotate.structures.bbox import QuadriBoxes, RotatedBoxes

    arr = np.asarray(polys, dtype=np.float32).reshape(-1, 8)
    if not len(arr):
        return np.zeros((0, 5), np.float32)
    r = RotatedBoxes(QuadriBoxes(arr).convert_to("rbox").tensor)
    return r.regularize_boxes(ANGLE_VERSION).numpy().astype(np.float32)


def regularize(rboxes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any ``(N, 5)`` rotated boxes -> the same boxes in le90 form."""
    from mmrotate.structures.bbox import RotatedBoxes

    t = torch.as_tensor(np.asarray(rboxes, dtype=np.float32)).reshape(-1, 5)
    return RotatedBoxes(t).regularize_boxes(ANGLE_VERSION).numpy()


def rbox_to_poly(rboxes: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, 5)`` rotated boxes -> ``(N, 8)`` polygons, clockwise on screen from the box's
    ``(-w/2, -h/2)`` corner (mmrotate's ``rbox2qbox`` lists them the other way round)."""
    r = np.asarray(rboxes, dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h, t = r.T
    c, s = np.cos(t), np.sin(t)
    out = []
    for dx, dy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        px, py = dx * w, dy * h
        out += [cx + px * c - py * s, cy + px * s + py * c]
    return np.stack(out, -1).astype(np.float32) if len(r) else np.zeros((0, 8), np.float32)
