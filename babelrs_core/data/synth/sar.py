"""SAR sensor model (docs/soi_mini.md §6.1): reflectivity, targets, shadow, PSF, speckle, noise, dB.

The sensor looks from the left: image x is ground range, near range at ``x = 0``, so shadows
fall toward ``+x`` with ground length ``h * tan(incidence)``. Order of operations::

    sigma0 (land cover x smooth fBm, K-texture on urban / sea; target footprints, point and line
    scatterers; far-range shadows)  ->  PSF (Gaussian + sinc^2 sidelobes of the brightest points)
    ->  speckle  I = (sigma0 * PSF) . n,  n ~ Gamma(L, 1/L)   (after the blur: uncorrelated, ENL L)
    ->  + noise floor Gamma(L, NESZ/L)  ->  10 log10  ->  clip to [lo, hi] dB  ->  8 bit

Layover is not modelled, so every return of a target lies inside its labelled footprint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from babelrs_core.config import SarSensor
from babelrs_core.data.synth import shapes
from babelrs_core.data.synth.cover import ASPHALT, COVER_NAMES, FIELD, SOIL, URBAN, WATER
from babelrs_core.data.synth.scene import Render, Scene, footprints, shadow_of
from babelrs_core.data.synth.textures import fbm, gamma_texture

#: Backscatter sigma0 per land cover, dB (approximate literature values, docs/soi_mini.md §6.1):
#: calm to choppy water, grass/fields, bare soil, tarmac (specular, dark), urban.
SIGMA0_DB: dict[int, tuple[float, float]] = {
    WATER: (-25.0, -12.0),
    FIELD: (-15.0, -8.0),
    SOIL: (-14.0, -9.0),
    ASPHALT: (-25.0, -18.0),
    URBAN: (-5.0, 5.0),
}
#: K-distribution texture shape nu (small = spiky) for heterogeneous clutter; fields, soil and
#: tarmac are homogeneous (speckle only).
CLUTTER_NU: dict[int, tuple[float, float]] = {URBAN: (1.0, 4.0), WATER: (5.0, 20.0)}
K_CORR_PX = 1.5  # correlation length of the K texture
TEXTURE_AMP = 0.3  # smooth fBm texture multiplies sigma0 by 0.7-1.3
TEXTURE_WAVELENGTH_PX = 24.0  # ... and varies over tens of pixels only (homogeneous patches)
#: Target footprint sigma0 (linear 0.3-1 for metal targets; concrete for quays and decks), dB.
TARGET_DB: dict[str, tuple[float, float]] = {"concrete": (-8.0, -3.0), "metal": (-5.2, 0.0)}
SHADOW_SIGMA0 = 1e-4  # no return in radar shadow: only the noise floor remains
N_POINTS = (2, 10)  # point scatterers per target (dihedral / trihedral corners)
LINE_OFFSET_DB = -6.0  # bright lines (superstructure, quay edges) relative to point gain
SIDELOBE_MIN_DB = 20.0  # points this far above the median sigma0 get sinc^2 sidelobes ...
SIDELOBE_PERCENTILE = 99.0  # ... and must be among the brightest 1 % of pixels
SIDELOBE_NULLS = 10  # sidelobes drawn out to this many nulls (unweighted sinc^2, -13 dB first)
DISTURBED_FRACTION = 0.01  # objects change the blurred sigma0 by more than this share: "disturbed"
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SINC2_FWHM_PER_NULL = 0.886  # FWHM of sinc^2 in units of its first-null distance


@dataclass
class SarSettings:
    """SAR acquisition drawn for one image (recorded in the scene graph)."""

    looks: int
    incidence_deg: float
    psf_sigma_px: float
    nesz_db: float
    gain_db: tuple[float, float]
    cover_sigma0_db: dict[str, float]
    clutter_nu: dict[str, float]
    clip_percentiles: tuple[float, float]
    jpeg_quality: int | None = None  # None: saved as PNG
    db_lo: float | None = None  # filled by render_sar: the dB range mapped to 0..255
    db_hi: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d


def draw_sar_settings(rng: np.random.Generator, sensor: SarSensor) -> SarSettings:
    """Draw looks, incidence, PSF, NESZ and per-cover sigma0 for one image."""
    looks = int(sensor.looks[int(rng.integers(len(sensor.looks)))])
    u = lambda r: float(rng.uniform(r.lo, r.hi))  # noqa: E731
    cover_db = {COVER_NAMES[c]: float(rng.uniform(*SIGMA0_DB[c])) for c in sorted(SIGMA0_DB)}
    nu = {COVER_NAMES[c]: float(rng.uniform(*CLUTTER_NU[c])) for c in sorted(CLUTTER_NU)}
    jpeg = rng.random() < sensor.jpeg_fraction
    quality = round(u(sensor.jpeg_quality)) if jpeg else None
    return SarSettings(
        looks=looks,
        incidence_deg=u(sensor.incidence_deg),
        psf_sigma_px=u(sensor.psf_sigma_px),
        nesz_db=u(sensor.nesz_db),
        gain_db=(sensor.scatterer_gain_db.lo, sensor.scatterer_gain_db.hi),
        cover_sigma0_db=cover_db,
        clutter_nu=nu,
        clip_percentiles=(sensor.db_clip_percentiles.lo, sensor.db_clip_percentiles.hi),
        jpeg_quality=quality,
    )


def to_db_uint8(intensity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensity to 8 bit through ``10 log10``, clipped to ``[lo, hi]`` dB."""
    db = 10.0 * np.log10(np.maximum(intensity, 1e-30))
    return np.round(np.clip((db - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def from_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Invert :func:`to_db_uint8` (up to quantisation and clipping): 8 bit -> intensity."""
    return 10.0 ** ((lo + values.astype(np.float64) / 255.0 * (hi - lo)) / 10.0)


@dataclass(frozen=True)
class _Geometry:
    """Where near range (-x) points in an object's local (s, t) frame, and its layover (px)."""

    near_s: float
    near_t: float
    layover_px: float


def _points(
    kind: str,
    win_s: np.ndarray,
    win_t: np.ndarray,
    fp: np.ndarray,
    ln: float,
    wd: float,
    rng: np.random.Generator,
    geo: _Geometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Scatterer masks inside the footprint: (points, lines) for one target."""
    n = int(rng.integers(N_POINTS[0], N_POINTS[1] + 1))
    a = win_s / (ln / 2.0)
    b = win_t / (wd / 2.0)
    near = lambda sa, tb, tol: (np.abs(a - sa) <= tol) & (np.abs(b - tb) <= tol)  # noqa: E731
    lines = np.zeros_like(fp)
    if kind == "ship":  # superstructure line along the centreline, points on it
        lines = fp & (np.abs(win_t) <= 0.5) & (a > -0.75) & (a < 0.3)
        anchors = [(float(rng.uniform(-0.75, 0.3)), 0.0) for _ in range(n)]
    elif kind == "plane":  # nose, wing roots, engines, tail
        anchors = [(0.9, 0.0), (0.1, 0.1), (0.1, -0.1), (0.1, 0.32), (0.1, -0.32), (-0.9, 0.0)]
        anchors = anchors[: max(n, 3)]
    elif kind == "tank":  # bright arc on the near-range (left, -x) side
        r = np.hypot(win_s, win_t) / (ln / 2.0)
        cos_near = (win_s * geo.near_s + win_t * geo.near_t) / np.maximum(
            np.hypot(win_s, win_t), 1e-9
        )
        lines = fp & (r > 0.8) & (cos_near > 0.5)
        anchors = []
    elif kind == "bridge":  # bright deck line plus a line offset toward near range
        lines = fp & (np.abs(win_t) <= 0.5)
        off_s, off_t = geo.near_s * geo.layover_px, geo.near_t * geo.layover_px
        second = (np.abs(win_t - off_t) <= 0.5) & (np.abs(win_s - off_s) <= ln / 2.0)
        lines |= fp & second
        anchors = []
    elif kind == "harbor":  # bright straight quay / pier edges
        lines = fp & ~ndimage.binary_erosion(fp, border_value=1)
        anchors = []
    else:  # vehicles and others: corners of the body
        anchors = [
            (float(rng.choice([-0.7, 0.7])), float(rng.choice([-0.6, 0.6])))
            for _ in range(min(n, 4))
        ]
    points = np.zeros_like(fp)
    for sa, tb in anchors:
        tol = max(1.0 / (ln / 2.0), 0.05)
        cand = fp & near(sa, tb, max(tol, 1.0 / max(wd / 2.0, 1.0)))
        if cand.any():
            idx = np.flatnonzero(cand)
            points.flat[idx[len(idx) // 2]] = True
    return points, lines


def ground_sigma0(
    scene: Scene, settings: SarSettings, rng: np.random.Generator, texture: bool = True
) -> np.ndarray:
    """Linear sigma0 of the land cover (smooth texture, K-distributed clutter), no objects."""
    shape = scene.shape
    sigma = np.zeros(shape)
    for c in SIGMA0_DB:
        sigma[scene.cover == c] = 10.0 ** (settings.cover_sigma0_db[COVER_NAMES[c]] / 10.0)
    if texture:
        t = fbm(rng, shape, beta=3.0, min_wavelength_px=TEXTURE_WAVELENGTH_PX)
        sigma *= 1.0 + TEXTURE_AMP * np.tanh(t / 2.0)
        for c in sorted(CLUTTER_NU):
            m = scene.cover == c
            if m.any():
                tau = gamma_texture(rng, shape, settings.clutter_nu[COVER_NAMES[c]], K_CORR_PX)
                sigma[m] *= tau[m]
    return sigma


def render_sar(
    scene: Scene, settings: SarSettings, rng: np.random.Generator, texture: bool = True
) -> Render:
    """Render the scene as an 8-bit SAR image; ``texture=False`` gives flat land cover."""
    shape = scene.shape
    sigma = ground_sigma0(scene, settings, rng, texture)

    background = sigma.copy()  # land cover only, to tell where objects change the image
    layers, geo = footprints(scene)
    objects = layers >= 0
    shadow, attrs = add_targets(scene, settings, rng, sigma, layers, geo)

    blurred = ndimage.gaussian_filter(sigma, settings.psf_sigma_px, mode="nearest")
    side = sidelobes(blurred, settings.psf_sigma_px)
    clean = blurred + side
    bare = ndimage.gaussian_filter(background, settings.psf_sigma_px, mode="nearest")
    disturbed = objects | shadow | (np.abs(clean - bare) > DISTURBED_FRACTION * bare)

    looks = settings.looks
    speckle = rng.gamma(looks, 1.0 / looks, size=shape)
    nesz = 10.0 ** (settings.nesz_db / 10.0)
    intensity = clean * speckle + rng.gamma(looks, nesz / looks, size=shape)
    db = 10.0 * np.log10(np.maximum(intensity, 1e-30))
    lo, hi = (round(float(v), 2) for v in np.percentile(db, settings.clip_percentiles))
    hi = max(hi, lo + 1.0)
    settings.db_lo, settings.db_hi = lo, hi
    image = to_db_uint8(intensity, lo, hi)
    return Render(image, layers, shadow, settings.to_json(), attrs, disturbed)


def add_targets(
    scene: Scene,
    settings: SarSettings,
    rng: np.random.Generator,
    sigma: np.ndarray,
    layers: np.ndarray,
    geo: list[tuple[shapes.Window, shapes.Parts]],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Add far-range shadows and the targets (footprint sigma0, point and line scatterers) to the
    ground ``sigma`` in place; return the shadow mask and each object's sensor attributes."""
    inc = math.radians(settings.incidence_deg)
    objects = layers >= 0
    shadow = np.zeros(scene.shape, dtype=bool)
    for o, (win, _p) in zip(scene.objects, geo, strict=True):
        fp = layers[win.slices] == o.index
        length = o.height_m * math.tan(inc) / scene.gsd_m
        shadow |= shadow_of(scene, o, win, fp, length, 0.0)
    shadow &= ~objects
    sigma[shadow] = SHADOW_SIGMA0

    attrs: list[dict[str, Any]] = []
    for o, (win, _p) in zip(scene.objects, geo, strict=True):
        fp = layers[win.slices] == o.index
        ring = ~objects[win.slices] & ~shadow[win.slices]
        clutter = float(np.median(sigma[win.slices][ring])) if ring.any() else float(sigma.mean())
        mat = "concrete" if o.material == "concrete" else "metal"
        body = 10.0 ** (float(rng.uniform(*TARGET_DB[mat])) / 10.0)
        region = sigma[win.slices]
        region[fp] = body
        a = math.radians(o.angle_deg)  # -x in the local frame: s = -cos(a), t = sin(a)
        geo_o = _Geometry(-math.cos(a), math.sin(a), o.height_m / math.tan(inc) / scene.gsd_m)
        pts, lines = _points(o.kind, win.s, win.t, fp, o.length_px, o.width_px, rng, geo_o)
        ref = max(clutter, body)
        gains = rng.uniform(settings.gain_db[0], settings.gain_db[1], size=int(pts.sum()))
        region[pts] += ref * 10.0 ** (gains / 10.0)
        line_gain = float(rng.uniform(*settings.gain_db)) + LINE_OFFSET_DB
        region[lines & ~pts] += ref * 10.0 ** (line_gain / 10.0)
        attrs.append(
            {
                "sigma0_db": 10.0 * math.log10(body),
                "clutter_db": 10.0 * math.log10(clutter),
                "n_points": int(pts.sum()),
                "n_line_px": int(lines.sum()),
            }
        )
    return shadow, attrs


def sidelobes(
    blurred: np.ndarray, psf_sigma: float, nulls: int = SIDELOBE_NULLS, step: int = 1
) -> np.ndarray:
    """Cross-shaped sinc^2 sidelobes (range and azimuth) of the brightest points, out to
    ``nulls`` nulls; ``step > 1`` finds the brightest from every ``step``-th row and column."""
    sample = blurred[::step, ::step]
    thr = max(
        float(np.percentile(sample, SIDELOBE_PERCENTILE)),
        float(np.median(sample)) * 10.0 ** (SIDELOBE_MIN_DB / 10.0),
    )
    bright = np.where(blurred > thr, blurred, 0.0)
    if not bright.any():
        return np.zeros_like(blurred)
    null = FWHM_PER_SIGMA * psf_sigma / SINC2_FWHM_PER_NULL
    reach = math.ceil(nulls * null)
    d = np.arange(-reach, reach + 1, dtype=np.float64)
    k = np.sinc(d / null) ** 2
    k[np.abs(d) < null] = 0.0  # the mainlobe is the Gaussian PSF already applied
    return ndimage.convolve1d(bright, k, axis=1, mode="constant") + ndimage.convolve1d(
        bright, k, axis=0, mode="constant"
    )
