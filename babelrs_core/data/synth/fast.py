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
* **The sensor is cheaper**: speckle and NETD noise are crops of per-process noise fields; IR
  optics blur only the windows objects change, and IR contrast is enforced through the blur of
  each object's own window (against an AGC range estimated before the optics) instead of blurring
  the whole frame every round; percentiles (dB range, AGC) come from a sample of about 16k pixels;
  SAR sidelobes reach 3 nulls; RGB skips the JPEG round trip; PNGs are written by a plain writer at
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
from babelrs_core.data.synth.cover import COVER_NAMES, WATER
from babelrs_core.data.synth.scene import (
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
#: Percentiles (dB range, AGC, sidelobe threshold) are taken over every k-th row and column,
#: k such that about this many pixels remain (every second at 256 x 256, fourth at 640 x 512).
_PERCENTILE_PIXELS = 16384
#: IR: an object's contrast is first pushed to this multiple of ``min_contrast_k`` before the
#: optics (the blur takes some of it), then checked through the optics.
_IR_CONTRAST_MARGIN = 1.5
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
    objects = sample_objects(
        rng, classes, ground.cover, ground.layout, gsd, sm.layout, probe=True, masks=masks
    )
    scene = Scene(
        dataset, split, index, stem, image_file, w, h, gsd, ground.cover, ground.layout, objects
    )
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


def _step(shape: tuple[int, ...]) -> int:
    """Every how many rows and columns percentiles look (:data:`_PERCENTILE_PIXELS`)."""
    return max(1, round(math.sqrt(shape[0] * shape[1] / _PERCENTILE_PIXELS)))


def _percentiles(img: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of every :func:`_step`-th row and column."""
    k = _step(img.shape)
    lo, hi = np.percentile(img[::k, ::k], q)
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
    blurred += sar.sidelobes(
        blurred, settings.psf_sigma_px, _SAR_SIDELOBE_NULLS, _step(sigma.shape)
    )
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
    _shadows, shadow = rgb.paint_objects(img, scene, settings, layers, masks)
    attrs = []
    for o, (win, _p) in zip(scene.objects, masks, strict=True):
        # an object's own shadow leaves its footprint out: what shades it is the others'
        own = layers[win.slices] == o.index
        shaded = float(shadow[win.slices][own].sum() / max(own.sum(), 1))
        attrs.append(rgb.object_attrs(o, shaded, settings))
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
    w = shape[1]
    sigma = settings.blur_sigma_px
    app = ground.arrays["app"].copy()  # float32
    seen = ground.arrays["seen"].copy()
    layers = _layers(scene, masks)
    boxes = np.full(shape, -1, dtype=np.int16)
    for o, (win, _p) in zip(scene.objects, masks, strict=True):
        boxes[win.slices][shapes.box_mask(win, o.length_px, o.width_px)] = o.index
    rings = [_Ring(o, boxes, sigma) for o in scene.objects]
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

    painters = [
        _IrObject(o, settings, app, win, parts, ring)
        for o, (win, parts), ring in zip(scene.objects, masks, rings, strict=True)
    ]
    # the AGC range to expect: the blurred ground, and the objects as painted (cheap: sampled)
    k = _step(shape)
    sample = np.where(layers[::k, ::k] >= 0, app[::k, ::k], seen[::k, ::k])
    _enforce_contrast(painters, settings, _percentiles(sample, settings.agc_percentiles))
    _optics(app, seen, regions, sigma)

    attrs: list[dict[str, Any]] = []
    for o, ring in zip(scene.objects, rings, strict=True):
        state = dict(settings.objects[o.index])
        if ring.empty:  # enclosed by other objects: no background to compare with
            attrs.append({**state, "contrast": None})
            continue
        region = seen[ring.slices]  # through the optics, as full mode records it
        inside, around = float(region[ring.box].mean()), float(region[ring.ring].mean())
        delta = inside - around
        attrs.append(
            {
                **state,
                "t_target_k": inside,
                "t_background_k": around,
                "contrast": 1 if delta > 0 else -1,
                "contrast_k": delta,
            }
        )

    seen += np.float32(settings.netd_k) * bank.noise(rng, scene.dataset, 0)
    p_lo, p_hi = _percentiles(seen, (1.0, 99.0))
    seen += rng.normal(0.0, settings.fixed_pattern * (p_hi - p_lo), size=(1, w)).astype(np.float32)
    lo, hi = (round(v, 3) for v in _percentiles(seen, settings.agc_percentiles))
    hi = max(hi, lo + 1e-3)
    settings.agc_lo_k, settings.agc_hi_k = lo, hi
    return Render(_to_uint8(seen, lo, hi), layers, shadow, settings.to_json(), attrs)


def _optics(
    app: np.ndarray, seen: np.ndarray, regions: list[tuple[int, int, int, int]], sigma: float
) -> np.ndarray:
    """Blur ``app`` into ``seen`` over ``regions`` (exactly what a whole-frame blur gives there);
    return ``seen``."""
    h, w = app.shape
    pad = _blur_reach(sigma)
    for y0, y1, x0, x1 in regions:
        py0, py1, px0, px1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
        blurred = ir.blur_k(app[py0:py1, px0:px1], sigma)
        seen[y0:y1, x0:x1] = blurred[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]
    return seen


def _blur_reach(sigma: float) -> int:
    """How far ``gaussian_filter`` reads (its default ``truncate`` of 4 standard deviations)."""
    return int(4.0 * sigma + 0.5)


class _Ring:
    """An object's box and the ring around it that stands for its background, defined as full
    mode defines it (:func:`ir.contrast_ring`: 1-4 px outside the box, other boxes grown by a
    pixel left out), in a window of the box grown by the ring; and the padded window the optics
    blur of that window reads."""

    def __init__(self, o: Any, boxes: np.ndarray, sigma: float) -> None:
        reach = ir.RING_PX[1] + 1
        win = shapes.make_window(
            o.cx, o.cy, o.length_px + 2 * reach, o.width_px + 2 * reach, o.angle_deg, boxes.shape
        )
        if win is None:  # cannot happen: sampled objects lie inside the image
            raise ValueError(f"object {o.index} lies outside the image")
        here = boxes[win.slices]
        self.slices = win.slices
        self.bounds = (win.y0, win.y1, win.x0, win.x1)
        self.box = here == o.index
        # the distance of each pixel centre from the box (ir.contrast_ring measures it from the
        # nearest box pixel centre: the same ring within a fraction of a pixel, cheaper)
        ds = np.maximum(np.abs(win.s) - o.length_px / 2.0, 0.0)
        dt = np.maximum(np.abs(win.t) - o.width_px / 2.0, 0.0)
        dist = np.hypot(ds, dt)
        others = (here >= 0) & ~self.box
        grown = others.copy()  # grown by a pixel (4-neighbourhood, binary_dilation's default)
        grown[1:] |= others[:-1]
        grown[:-1] |= others[1:]
        grown[:, 1:] |= others[:, :-1]
        grown[:, :-1] |= others[:, 1:]
        ring_px = ir.RING_PX
        self.ring = (dist > ring_px[0]) & (dist <= ring_px[1]) & ~self.box & ~grown
        self.empty = not self.ring.any()
        h, w = boxes.shape
        pad = _blur_reach(sigma)
        py0, px0 = max(win.y0 - pad, 0), max(win.x0 - pad, 0)
        self.padded = (slice(py0, min(win.y1 + pad, h)), slice(px0, min(win.x1 + pad, w)))
        self.inner = (slice(win.y0 - py0, win.y1 - py0), slice(win.x0 - px0, win.x1 - px0))
        self.sigma = sigma

    def contrast(
        self, app: np.ndarray, agc: tuple[float, float], blur: bool
    ) -> tuple[float, float]:
        """(box mean - ring mean, the same after the AGC range clips it), through the optics
        (``blur``) or of ``app`` as it is."""
        region = ir.blur_k(app[self.padded], self.sigma)[self.inner] if blur else app[self.slices]
        box, ring = region[self.box], region[self.ring]
        shown_box, shown_ring = np.clip(box, *agc), np.clip(ring, *agc)
        return float(box.mean() - ring.mean()), float(shown_box.mean() - shown_ring.mean())


class _IrObject:
    """One object painted into the radiance image, with the part temperatures it can shift."""

    def __init__(
        self,
        o: Any,
        settings: ir.IrSettings,
        app: np.ndarray,
        win: shapes.Window,
        parts: shapes.Parts,
        ring: _Ring,
    ) -> None:
        self.o, self.settings, self.app, self.ring = o, settings, app, ring
        self.state = settings.objects[o.index]
        self.region, self.parts = app[win.slices], parts
        self.temps = {}
        for name in parts:
            self.temps[name] = ir.part_state(
                o.kind, name, self.state, o.material, o.attrs.get("cargo")
            )
            self._paint(name)
        self.sign = 0
        self.agrees = True
        self.first = self.snapshot()  # as drawn

    def _paint(self, name: str) -> None:
        t, e = self.temps[name]
        self.region[self.parts[name]] = ir.apparent_k(np.array(t), np.array(e), self.settings.sky_k)

    def shortfall(self, agc: tuple[float, float], need: float, blur: bool) -> float:
        """How far the contrast falls short of ``need`` (and of ``DISPLAY_SHARE`` of it after
        the AGC clips), in the sign the scene has; <= 0: enough."""
        if self.ring.empty:
            return 0.0
        delta, shown = self.ring.contrast(self.app, agc, blur)
        if not self.sign:  # as in full mode: the scene's own sign, or by state when near zero
            near_zero = abs(delta) < 0.5
            self.sign = (1 if self.state["running"] else -1) if near_zero else int(np.sign(delta))
        self.agrees = (delta > 0) == (shown > 0)  # the screen shows the sign that is recorded
        return max(need - self.sign * delta, need * ir.DISPLAY_SHARE - self.sign * shown)

    def snapshot(self) -> tuple[dict[str, tuple[float, float]], dict[str, Any], int]:
        return dict(self.temps), dict(self.state), self.sign

    def restore(self, snap: tuple[dict[str, tuple[float, float]], dict[str, Any], int]) -> None:
        temps, state, self.sign = snap
        self.temps = dict(temps)
        self.state.update(state)
        for name in self.temps:
            self._paint(name)

    def shift(self, dk: float) -> None:
        """Warm (or cool) every emissive part by ``dk`` (bare metal mirrors the sky whatever its
        temperature), as full mode does."""
        for name, (t, e) in self.temps.items():
            if e > 0.5:
                self.temps[name] = (t + dk, e)
                self._paint(name)
        for key in ("t_body_k", "t_engine_k", "t_roof_k"):
            if key in self.state:
                self.state[key] += dk


def _overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


def _enforce_contrast(
    objects: list[_IrObject], settings: ir.IrSettings, agc: tuple[float, float]
) -> None:
    """Give every object ``min_contrast_k`` against its ring through the optics, also after the
    AGC range ``agc`` clips it (``DISPLAY_SHARE`` of it), as full mode does: first cheaply before
    the optics with a margin, then checked through the blur of each object's window until every
    object has it (a shift re-checks the objects whose rings its blur reaches).

    An object still short then tries the other sign from its drawn temperatures: a target pushed
    towards a background the AGC shows white (black) saturates, warms (cools) its own ring through
    the blur and loses its contrast on screen however far it is pushed. If that falls short too,
    it goes back to where the drawn sign got it.
    """
    need = settings.min_contrast_k
    # whose measurement a shift of an object can change: itself and objects whose ring window
    # its blurred footprint reaches
    near = {
        obj: [other for other in objects if _overlap(obj.ring.padded, other.ring.slices)]
        for obj in objects
    }

    def push(
        group: list[_IrObject], agc: tuple[float, float], blur: bool, margin: float, rounds: int
    ) -> dict[_IrObject, float]:
        """Push for up to ``rounds``; the objects still short after, with their shortfall."""
        gaps = {obj: obj.shortfall(agc, need * margin, blur) for obj in group}
        for _ in range(rounds):
            short = [obj for obj in group if gaps[obj] > 0]
            if not short:
                break
            for obj in short:
                obj.shift(obj.sign * gaps[obj] * 1.5)  # overshoot, as full mode
            changed = {other for obj in short for other in near[obj]} & set(group)
            gaps.update({obj: obj.shortfall(agc, need * margin, blur) for obj in changed})
        return {obj: gap for obj, gap in gaps.items() if gap > 0}

    push(objects, agc, False, _IR_CONTRAST_MARGIN, 2)
    stuck = push(objects, agc, True, 1.0, ir.CONTRAST_ROUNDS)
    if not stuck:
        return
    before = {obj: (obj.snapshot(), obj.agrees) for obj in stuck}
    for obj in stuck:
        sign = obj.sign
        obj.restore(obj.first)
        obj.sign = -sign
    after = push(objects, agc, True, 1.0, ir.CONTRAST_ROUNDS)  # neighbours feel the change
    # short either way: the drawn sign, unless only the other one shows the sign it records
    for obj in after:
        if obj in before and not (obj.agrees and not before[obj][1]):
            obj.restore(before[obj][0])
