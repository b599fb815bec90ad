"""SOI-mini at scale: ``soi_mini.render: fast`` (docs/soi_mini.md §7).

The same scene graphs, formats and label statistics as the full renderers, several times faster:

* **Grounds are reused.** Each process keeps a bank of rendered grounds per dataset: a land-cover
  map with its layout and the sensor's view of it (SAR sigma0, RGB colour, IR temperature and its
  blurred radiance), up to ``soi_mini.fast.backgrounds_per_layout`` of each *layout kind* (river,
  water, dry land, road, lot; day or night for IR). An image draws its classes and what its layout
  needs exactly as in full mode, then one ground of that kind. Ground ``k`` of a kind is drawn
  from its own seed, so an image never depends on which images the process rendered before it.
* **Objects are placed as in full mode**: the same classes, sizes, placement rules and rejection
  sampling on that ground (with a cheap probe that rules most poses out from a few pixels and
  changes no outcome). The part masks rasterised for placement are the ones rendered: no object
  is drawn twice.
* **The sensor is cheaper**: speckle and NETD noise are crops of per-process noise fields, IR
  contrast is set from the ground around each object instead of iterating through the optics, IR
  optics blur only the windows objects change, percentiles (dB range, AGC) come from a quarter of
  the pixels, RGB skips the JPEG round trip, and PNGs are written at
  ``soi_mini.fast.png_compress_level``.

Deterministic: every draw comes from the image's generator or from a bank item's own seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from babelrs_core.concepts import DATASET_NAMES
from babelrs_core.config import DatasetSpec, Params, SoiMini
from babelrs_core.data.synth import ir, rgb, sar, shapes
from babelrs_core.data.synth.scene import (
    COVER_NAMES,
    WATER,
    LayoutNeeds,
    Render,
    Scene,
    draw_classes,
    draw_needs,
    placement_order,
    sample_layout,
    sample_objects,
)

Masks = list[tuple[shapes.Window, shapes.Parts]]

#: Third seed word of bank grounds and noise fields (an image's seed has four words, so no bank
#: item shares an image's random stream).
_GROUND_STREAM, _NOISE_STREAM = 1, 2
#: Percentiles are taken over every second row and column.
_PERCENTILE_STEP = 2
#: IR: an object's contrast is pushed to this multiple of ``min_contrast_k`` before the optics
#: (the blur takes some of it; the contrast recorded is measured after the blur).
_IR_CONTRAST_MARGIN = 1.5
_IR_CONTRAST_ROUNDS = 2
#: SAR sidelobes are drawn out to this many nulls (full mode: sar.SIDELOBE_NULLS).
_SAR_SIDELOBE_NULLS = 3


@dataclass
class Ground:
    """One bank item: land cover, layout and the sensor's rendering of it (read-only)."""

    cover: np.ndarray
    layout: dict[str, Any]
    settings: Any  # SarSettings / RgbSettings / IrSettings the ground was drawn with
    arrays: dict[str, np.ndarray]
    ident: str  # "<layout kind>-<item>", recorded in the scene graph


def gsd_of(sm: SoiMini, dataset: str) -> float:
    return {"sardet": sm.sar.gsd_m, "dota": sm.rgb.gsd_m, "dronevehicle": sm.ir.gsd_m}[dataset]


def _shape(sm: SoiMini, dataset: str) -> tuple[int, int]:
    spec: DatasetSpec = getattr(sm, dataset)
    return spec.image_size.height, spec.image_size.width


class Bank:
    """The grounds and noise fields of one params set, made on first use."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self._grounds: dict[tuple[str, int, int], Ground] = {}
        self._noise: dict[tuple[str, int, int], np.ndarray] = {}

    def ground(self, dataset: str, needs: LayoutNeeds, night: bool, item: int) -> Ground:
        if not needs.water or needs.river:  # only a sea's shoreline depends on dry land
            needs = dataclasses.replace(needs, dry=True)
        flags = (needs.river, needs.water, needs.dry, needs.road, needs.lot, night)
        kind = sum(int(f) << i for i, f in enumerate(flags))
        key = (dataset, kind, item)
        if key not in self._grounds:
            self._grounds[key] = _make_ground(self.params, dataset, needs, night, kind, item)
        return self._grounds[key]

    def noise(self, rng: np.random.Generator, dataset: str, looks: int) -> np.ndarray:
        """A frame-sized crop (random offset and flips) of one of the dataset's noise fields:
        ``Gamma(looks, 1/looks)`` speckle, or standard normal for ``looks == 0``."""
        sm = self.params.soi_mini
        h, w = _shape(sm, dataset)
        item = int(rng.integers(sm.fast.noise_tiles))
        key = (dataset, looks, item)
        if key not in self._noise:
            seed = [self.params.seed, DATASET_NAMES.index(dataset), _NOISE_STREAM, looks, item]
            g = np.random.default_rng(seed)
            size = (2 * h, 2 * w)
            field = g.standard_normal(size) if looks == 0 else g.gamma(looks, 1.0 / looks, size)
            self._noise[key] = field.astype(np.float32)
        oy, ox, flip = int(rng.integers(h + 1)), int(rng.integers(w + 1)), int(rng.integers(4))
        crop = self._noise[key][oy : oy + h, ox : ox + w]
        return crop[:: -1 if flip & 1 else 1, :: -1 if flip & 2 else 1]


_BANKS: dict[str, Bank] = {}


def bank_for(params: Params) -> Bank:
    """This process's bank for ``params`` (one kept: a new params set replaces it)."""
    key = params.model_dump_json(include={"seed", "soi_mini"})
    if key not in _BANKS:
        _BANKS.clear()
        _BANKS[key] = Bank(params)
    return _BANKS[key]


def _make_ground(
    params: Params, dataset: str, needs: LayoutNeeds, night: bool, kind: int, item: int
) -> Ground:
    sm = params.soi_mini
    shape = _shape(sm, dataset)
    gsd = gsd_of(sm, dataset)
    seed = [params.seed, DATASET_NAMES.index(dataset), _GROUND_STREAM, kind, item]
    rng = np.random.default_rng(seed)
    cover, layout = sample_layout(rng, [], shape, gsd, sm.layout, needs)
    scene = Scene(dataset, "", 0, "", "", shape[1], shape[0], gsd, cover, layout, [])
    settings: Any
    if dataset == "sardet":
        settings = sar.draw_sar_settings(rng, sm.sar)
        arrays = {"sigma0": sar.ground_sigma0(scene, settings, rng)}
    elif dataset == "dota":
        settings = rgb.draw_rgb_settings(rng, sm.rgb, scene)
        arrays = {"rgb": rgb.ground_rgb(scene, settings, rng).astype(np.float32)}
    else:
        settings = ir.draw_ir_settings(rng, sm.ir, scene, night=night)
        temp, eps = ir.ground_k(scene, settings, rng)
        app = ir.apparent_k(temp, eps, settings.sky_k)
        seen = ir.blur_k(app, settings.blur_sigma_px)
        arrays = {
            "temp": temp.astype(np.float32),
            "app": app.astype(np.float32),
            "seen": seen.astype(np.float32),
        }
    for a in arrays.values():
        a.flags.writeable = False
    cover.flags.writeable = False
    return Ground(cover, layout, settings, arrays, f"{kind}-{item}")


def render(
    params: Params,
    dataset: str,
    split: str,
    index: int,
    rng: np.random.Generator,
    stem: str,
    image_file: str,
) -> tuple[Scene, Render, Masks]:
    """Draw and render one image in fast mode: the scene graph, the render and each object's
    window and part masks (the generator finishes the graph as in full mode)."""
    sm = params.soi_mini
    spec: DatasetSpec = getattr(sm, dataset)
    gsd = gsd_of(sm, dataset)
    h, w = _shape(sm, dataset)
    bank = bank_for(params)
    classes = placement_order(draw_classes(rng, dataset, spec, sm.layout))
    needs = draw_needs(rng, [k for _, k in classes], sm.layout)
    night = dataset == "dronevehicle" and bool(rng.random() < sm.ir.night_fraction)
    ground = bank.ground(dataset, needs, night, int(rng.integers(sm.fast.backgrounds_per_layout)))
    masks: Masks = []
    objects = sample_objects(rng, classes, ground.cover, ground.layout, gsd, sm.layout,
                             probe=True, masks=masks)  # fmt: skip
    scene = Scene(dataset, split, index, stem, image_file, w, h, gsd, ground.cover, ground.layout,
                  objects)  # fmt: skip
    out: Render
    if dataset == "sardet":
        sar_settings = sar.draw_sar_settings(rng, sm.sar)
        sar_settings.cover_sigma0_db = ground.settings.cover_sigma0_db
        sar_settings.clutter_nu = ground.settings.clutter_nu
        if sar_settings.jpeg_quality is not None:
            scene.image_file = image_file[: -len(".png")] + ".jpg"
        out = _render_sar(scene, sar_settings, rng, ground, masks, bank)
    elif dataset == "dota":
        rgb_settings = rgb.draw_rgb_settings(rng, sm.rgb, scene)
        rgb_settings.cover_rgb = ground.settings.cover_rgb
        out = _render_rgb(scene, rgb_settings, ground, masks)
    else:
        ir_settings = ir.draw_ir_settings(rng, sm.ir, scene, night=night)
        _adopt_ground(ir_settings, ground.settings)
        out = _render_ir(scene, ir_settings, rng, ground, masks, bank)
    out.sensor = {"render": "fast", "ground": ground.ident, **out.sensor}
    return scene, out, masks


def _layers(scene: Scene, masks: Masks) -> np.ndarray:
    layers = np.full(scene.shape, -1, dtype=np.int16)
    for o, (win, p) in zip(scene.objects, masks, strict=True):
        layers[win.slices][shapes.union(p)] = o.index
    return layers


def _percentiles(img: np.ndarray, q: tuple[float, float], step: int = 2) -> tuple[float, float]:
    """Percentiles of every ``step``-th row and column."""
    lo, hi = np.percentile(img[::step, ::step], q)
    return float(lo), float(hi)


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` to 0..255, rounded and clipped (in place: ``img`` is scratch)."""
    img -= lo
    img *= 255.0 / (hi - lo)
    np.clip(img, 0.0, 255.0, out=img)
    return np.rint(img, out=img).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# SAR


def _render_sar(
    scene: Scene,
    settings: sar.SarSettings,
    rng: np.random.Generator,
    ground: Ground,
    masks: Masks,
    bank: Bank,
) -> Render:
    layers = _layers(scene, masks)
    sigma = ground.arrays["sigma0"].copy()
    shadow, attrs = sar.add_targets(scene, settings, rng, sigma, layers, masks)
    blurred = ndimage.gaussian_filter(sigma, settings.psf_sigma_px, mode="nearest")
    blurred += sar.sidelobes(blurred, settings.psf_sigma_px, _SAR_SIDELOBE_NULLS, step=2)
    nesz = 10.0 ** (settings.nesz_db / 10.0)
    intensity = blurred * bank.noise(rng, scene.dataset, settings.looks)
    intensity += nesz * bank.noise(rng, scene.dataset, settings.looks)
    np.maximum(intensity, 1e-30, out=intensity)
    db = np.log10(intensity, out=intensity)
    db *= 10.0
    lo, hi = (round(v, 2) for v in _percentiles(db, settings.clip_percentiles))
    hi = max(hi, lo + 1.0)
    settings.db_lo, settings.db_hi = lo, hi
    return Render(_to_uint8(db, lo, hi), layers, shadow, settings.to_json(), attrs)


# ----------------------------------------------------------------------------------------------
# RGB


def _render_rgb(scene: Scene, settings: rgb.RgbSettings, ground: Ground, masks: Masks) -> Render:
    img = ground.arrays["rgb"].copy()  # float32
    layers = _layers(scene, masks)
    shadows, shadow = rgb.paint_objects(img, scene, settings, layers, masks)
    shaded_by = np.zeros(scene.shape, dtype=np.uint8)
    for sh in shadows:  # an object's own shadow leaves its footprint out
        shaded_by += sh
    attrs = []
    for o, (win, _p) in zip(scene.objects, masks, strict=True):
        own = layers[win.slices] == o.index
        shaded = float((shaded_by[win.slices][own] > 0).sum() / max(own.sum(), 1))
        size = math.sqrt(o.length_px * o.width_px)
        difficult = (
            size < settings.difficult_min_px or shaded >= settings.difficult_shadowed_fraction
        )
        attrs.append({**settings.objects[o.index], "shadowed_fraction": shaded,
                      "difficult": int(difficult)})  # fmt: skip
    img = ndimage.gaussian_filter(img, (settings.blur_sigma_px, settings.blur_sigma_px, 0))
    img *= (np.array(settings.gains) * settings.brightness * (1 - settings.haze)).astype(np.float32)
    img += (np.array(rgb.HAZE_RGB) * settings.haze).astype(np.float32)
    return Render(_to_uint8(img, 0.0, 1.0), layers, shadow, settings.to_json(), attrs)


# ----------------------------------------------------------------------------------------------
# IR


def _adopt_ground(settings: ir.IrSettings, g: ir.IrSettings) -> None:
    """The image's thermal settings on a bank ground: the ground's air, sky, land-cover
    temperatures and optics; object temperatures move with the air temperature."""
    shift = g.air_k - settings.air_k
    for state in settings.objects:
        for key in ("t_body_k", "t_engine_k", "t_roof_k"):
            if key in state:
                state[key] += shift
    settings.air_k, settings.sky_k, settings.ground_k = g.air_k, g.sky_k, dict(g.ground_k)
    settings.texture_k, settings.blur_sigma_px = g.texture_k, g.blur_sigma_px


#: Emissivity of each land-cover code.
_COVER_EPS = np.array([ir.COVER_EPS[c] for c in range(len(COVER_NAMES))])


def _cast_shadow(
    shadow: np.ndarray,
    scene: Scene,
    o: Any,
    win: shapes.Window,
    fp: np.ndarray,
    d: tuple[float, float],
) -> tuple[int, int, int, int]:
    """OR the shadow ``o`` casts along ``d = (dx, dy)`` px into ``shadow``, as
    :func:`~babelrs_core.data.synth.scene.shadow_of` draws it (own footprint left out, a bridge's
    on water only) but in its own window; return that window's bounds."""
    swept, y0, x0 = shapes.sweep(fp, win.y0, win.x0, d[0], d[1], scene.shape)
    own = swept[win.y0 - y0 : win.y1 - y0, win.x0 - x0 : win.x1 - x0]
    own &= ~fp
    y1, x1 = y0 + swept.shape[0], x0 + swept.shape[1]
    if o.kind == "bridge":
        swept &= scene.cover[y0:y1, x0:x1] == WATER
    shadow[y0:y1, x0:x1] |= swept
    return y0, y1, x0, x1


def _render_ir(
    scene: Scene,
    settings: ir.IrSettings,
    rng: np.random.Generator,
    ground: Ground,
    masks: Masks,
    bank: Bank,
) -> Render:
    shape = scene.shape
    h, w = shape
    app = ground.arrays["app"].copy()  # float32
    seen = ground.arrays["seen"].copy()
    layers = _layers(scene, masks)
    rings = [_Ring(o, layers) for o in scene.objects]
    regions = [r.bounds for r in rings]  # what the blur must redo: box, ring and shadow
    shadow = np.zeros(shape, dtype=bool)
    if settings.sun_elevation_deg is not None:
        az = math.radians(settings.sun_azimuth_deg or 0.0)
        tan_el = math.tan(math.radians(settings.sun_elevation_deg))
        for o, (win, _p) in zip(scene.objects, masks, strict=True):
            length = o.height_m / tan_el / scene.gsd_m
            if length <= 0:
                continue
            fp = layers[win.slices] == o.index
            d = (-math.sin(az) * length, math.cos(az) * length)
            sy0, sy1, sx0, sx1 = _cast_shadow(shadow, scene, o, win, fp, d)
            y0, y1, x0, x1 = regions[o.index]
            regions[o.index] = (min(y0, sy0), max(y1, sy1), min(x0, sx0), max(x1, sx1))
        shadow &= layers < 0
        temp = ground.arrays["temp"][shadow] - settings.shadow_dk
        app[shadow] = ir.apparent_k(temp, _COVER_EPS[scene.cover[shadow]], settings.sky_k)

    for o, (win, parts), ring in zip(scene.objects, masks, rings, strict=True):
        _paint_ir_object(o, settings, app, win, parts, ring)
    pad = int(4.0 * settings.blur_sigma_px + 0.5)  # gaussian_filter's reach (truncate = 4)
    for y0, y1, x0, x1 in regions:
        py0, py1, px0, px1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
        blurred = ir.blur_k(app[py0:py1, px0:px1], settings.blur_sigma_px)
        seen[y0:y1, x0:x1] = blurred[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]

    attrs: list[dict[str, Any]] = []
    for o, ring in zip(scene.objects, rings, strict=True):
        state = dict(settings.objects[o.index])
        m = ring.measure(seen)  # through the optics, as full mode records it
        if m is None:  # enclosed by other objects: no background to compare with
            attrs.append({**state, "contrast": None})
            continue
        delta = m[0] - m[1]
        attrs.append({**state, "t_target_k": m[0], "t_background_k": m[1],
                      "contrast": 1 if delta > 0 else -1, "contrast_k": delta})  # fmt: skip

    seen += np.float32(settings.netd_k) * bank.noise(rng, scene.dataset, 0)
    p_lo, p_hi = _percentiles(seen, (1.0, 99.0), step=4)
    seen += rng.normal(0.0, settings.fixed_pattern * (p_hi - p_lo), size=(1, w)).astype(np.float32)
    lo, hi = (round(v, 3) for v in _percentiles(seen, settings.agc_percentiles))
    hi = max(hi, lo + 1e-3)
    settings.agc_lo_k, settings.agc_hi_k = lo, hi
    return Render(_to_uint8(seen, lo, hi), layers, shadow, settings.to_json(), attrs)


class _Ring:
    """An object's box and the ring around it that stands for its background (1-4 px outside
    the box, no object), in a window of the box grown by the ring."""

    def __init__(self, o: Any, layers: np.ndarray) -> None:
        reach = ir.RING_PX[1] + 1
        win = shapes.make_window(o.cx, o.cy, o.length_px + 2 * reach, o.width_px + 2 * reach,
                                 o.angle_deg, layers.shape)  # fmt: skip
        if win is None:  # cannot happen: sampled objects lie inside the image
            raise ValueError(f"object {o.index} lies outside the image")
        ds = np.maximum(np.abs(win.s) - o.length_px / 2.0, 0.0)
        dt = np.maximum(np.abs(win.t) - o.width_px / 2.0, 0.0)
        dist = np.hypot(ds, dt)
        self.slices = win.slices
        self.bounds = (win.y0, win.y1, win.x0, win.x1)
        self.box = dist == 0.0
        self.ring = (dist > ir.RING_PX[0]) & (dist <= ir.RING_PX[1]) & (layers[win.slices] < 0)
        self.empty = not self.ring.any()

    def measure(self, img: np.ndarray) -> tuple[float, float] | None:
        """Mean of ``img`` over the box and over the ring (None: no ring)."""
        if self.empty:
            return None
        region = img[self.slices]
        return float(region[self.box].mean(dtype=np.float64)), float(
            region[self.ring].mean(dtype=np.float64)
        )


def _paint_ir_object(
    o: Any,
    settings: ir.IrSettings,
    app: np.ndarray,
    win: shapes.Window,
    parts: shapes.Parts,
    ring: _Ring,
) -> None:
    """Paint one object's parts (apparent temperature) and push its contrast against the ring
    around it to ``_IR_CONTRAST_MARGIN x min_contrast_k``, keeping the sign the scene has."""
    state = settings.objects[o.index]
    region = app[win.slices]

    def paint(name: str, t: float, e: float) -> None:
        region[parts[name]] = ir.apparent_k(np.array(t), np.array(e), settings.sky_k)

    temps = {}
    for name in parts:
        temps[name] = ir.part_state(o.kind, name, state, o.material, o.attrs.get("cargo"))
        paint(name, *temps[name])
    need = settings.min_contrast_k * _IR_CONTRAST_MARGIN
    sign = 0
    for _ in range(_IR_CONTRAST_ROUNDS):
        m = ring.measure(app)
        if m is None:
            break
        delta = m[0] - m[1]
        if not sign:  # as in full mode: the scene's own sign, or by state when near zero
            sign = (1 if state["running"] else -1) if abs(delta) < 0.5 else int(np.sign(delta))
        shortfall = need - sign * delta
        if shortfall <= 0:
            break
        shift = sign * shortfall * 1.5
        for name, (t, e) in temps.items():
            if e > 0.5:  # bare metal mirrors the sky whatever its temperature
                temps[name] = (t + shift, e)
                paint(name, t + shift, e)
        for key in ("t_body_k", "t_engine_k", "t_roof_k"):
            if key in state:
                state[key] += shift
