"""SAR speckle statistics measured on the written 8-bit images.

ENL = mean^2 / var of intensity over a homogeneous area. The model is
``I = sigma0 * n + N * m`` with ``n, m ~ Gamma(L, 1/L)`` (speckle, and the L-look thermal noise of
mean ``N`` = NESZ), so ``mean = s + N`` and ``var = (s^2 + N^2) / L``: the plain ENL over-states L
by ``(s + N)^2 / (s^2 + N^2)`` (up to ~20 % for a dark field near the noise floor). The honest
estimator uses the recorded NESZ: ``L = (s^2 + N^2) / var`` with ``s = mean - N``. We check both:
the plain ENL with the noise floor pushed far down, and the corrected one with the real floor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from babelrs_core.config import Params
from babelrs_core.data.layout import scenes_file
from babelrs_core.data.synth import writers
from babelrs_core.data.synth.cover import FIELD, SOIL
from babelrs_core.data.synth.generate import render_image
from babelrs_core.data.synth.sar import draw_sar_settings, from_uint8, render_sar
from babelrs_core.data.synth.scene import empty_scene

TOL = 0.15
#: Windows keep this far from other land covers: the PSF (sigma <= 1 px) spreads a cover up to
#: ~20 dB brighter (urban next to a field) over a few pixels before speckle is applied.
MARGIN_PX = 5.0


def _flat_png(
    params: Params, looks: int, tmp: Path, nesz_db: float | None
) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(100 + looks)
    settings = dataclasses.replace(draw_sar_settings(rng, params.soi_mini.sar), looks=looks)
    if nesz_db is not None:
        settings = dataclasses.replace(settings, nesz_db=nesz_db)
    scene = empty_scene("sardet", 256, 256, params.soi_mini.sar.gsd_m, cover=FIELD)
    render = render_sar(scene, settings, rng, texture=False)
    path = tmp / f"flat_{looks}.png"
    writers.save_image(path, render.image)
    values = np.asarray(Image.open(path))[..., 0]
    return from_uint8(values, render.sensor["db_lo"], render.sensor["db_hi"]), render.sensor


@pytest.mark.parametrize("looks", [1, 2, 3, 4, 5])
def test_enl_of_flat_scene_plain(params: Params, looks: int, tmp_path: Path) -> None:
    intensity, _ = _flat_png(params, looks, tmp_path, nesz_db=-60.0)
    enl = intensity.mean() ** 2 / intensity.var()
    assert enl == pytest.approx(looks, rel=TOL)


@pytest.mark.parametrize("looks", [1, 2, 3, 4, 5])
def test_enl_of_flat_scene_with_noise_floor(params: Params, looks: int, tmp_path: Path) -> None:
    intensity, sensor = _flat_png(params, looks, tmp_path, nesz_db=None)
    noise = 10 ** (sensor["nesz_db"] / 10)
    s = intensity.mean() - noise
    assert (s**2 + noise**2) / intensity.var() == pytest.approx(looks, rel=TOL)


def _inside_cover(cover: np.ndarray, codes: tuple[int, ...], margin: float) -> np.ndarray:
    """Pixels of the given covers at least ``margin`` px from any other cover."""
    out = np.zeros(cover.shape, dtype=bool)
    for c in codes:
        out |= ndimage.distance_transform_edt(cover == c) > margin
    return out


def _windows_enl(
    intensity: np.ndarray, ok: np.ndarray, cover: np.ndarray, noise: float, size: int
) -> tuple[float, int]:
    """Pooled ENL over ``size``-px windows wholly inside ``ok`` and one land cover; each window is
    normalised by its own mean, so the slow fBm texture (tens of px) does not count as speckle
    variance."""
    num = den = 0.0
    n = 0
    h, w = intensity.shape
    for y in range(0, h - size + 1, size):
        for x in range(0, w - size + 1, size):
            c = cover[y : y + size, x : x + size]
            if not ok[y : y + size, x : x + size].all() or (c != c[0, 0]).any():
                continue
            win = intensity[y : y + size, x : x + size]
            m, v = win.mean(), win.var(ddof=1)
            num += ((m - noise) ** 2 + noise**2) / m**2
            den += v / m**2
            n += size * size
    return (num / den if den else float("nan")), n


def test_enl_on_generated_images(params: Params, make_params, tmp_path: Path) -> None:
    """Real SOI-mini images (default 256-px size): the recorded L is recovered within 15 %.

    Windows are object-free and away from every target influence (footprints, shadows, sinc^2
    sidelobes; ``Render.disturbed``), lie wholly in field or bare soil and keep MARGIN_PX from any
    other cover (the PSF mixes neighbouring covers before speckle): field and soil are
    homogeneous (speckle on a smooth texture), while urban and sea clutter carry K-distributed
    texture on purpose (their ENL is below L by design) and tarmac/water sit near the noise floor.
    """
    from babelrs_core.data.synth.generate import generate_soi_mini

    sar = {
        **params.soi_mini.sardet.model_dump(),
        "splits": {"train": 6},
        "image_size": {"width": 256, "height": 256},
        "objects_per_image": {"lo": 1, "hi": 4},
    }
    p = make_params(
        sardet=sar,
        dota={**params.soi_mini.dota.model_dump(), "splits": {}},
        dronevehicle={**params.soi_mini.dronevehicle.model_dump(), "splits": {}},
    )
    raw = tmp_path / "raw"
    generate_soi_mini(p, raw, progress=False)
    records = [json.loads(x) for x in scenes_file(raw, "sardet", "train").read_text().splitlines()]
    checked = 0
    for i, rec in enumerate(records):
        scene, render = render_image(p, "sardet", "train", i)
        values = np.asarray(Image.open(raw / rec["image"]))[..., 0]
        assert (values == render.image).all()
        sensor = rec["sensor"]
        intensity = from_uint8(values, sensor["db_lo"], sensor["db_hi"])
        ok = _inside_cover(scene.cover, (FIELD, SOIL), MARGIN_PX) & ~render.disturbed
        enl, n_px = _windows_enl(intensity, ok, scene.cover, 10 ** (sensor["nesz_db"] / 10), 16)
        if n_px < 2048:  # too little clean land to estimate the variance (~3 % error per 2k px)
            continue
        checked += 1
        assert enl == pytest.approx(sensor["looks"], rel=TOL), (i, sensor["looks"], enl, n_px)
    assert checked >= 3
