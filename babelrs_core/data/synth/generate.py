"""Generate SOI-mini: scene graphs rendered by three sensor models, written in the real formats.

Layout under the raw root (:mod:`babelrs_core.data.layout`)::

    SARDet_100K/Annotations/{split}.json, SARDet_100K/JPEGImages/{split}/{stem}.png
    DOTA/{split}/images/P0000.png, DOTA/{split}/labelTxt/P0000.txt
    DroneVehicle/{split}/{split}imgr/00001.jpg, DroneVehicle/{split}/{split}labelr/00001.xml
    scenes/{dataset}/{split}.jsonl          one scene graph per image (objects, sensor, caption)

Deterministic: image ``i`` of ``split`` of ``dataset`` is drawn from
``np.random.default_rng([seed, dataset_index, split_index, i])`` alone, so the same params give
byte-identical files, and changing one split's size leaves the other images unchanged. The whole
tree is written to a temporary folder and swapped in atomically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from babelrs_core.concepts import DATASET_NAMES, DATASETS, SPLITS, Split
from babelrs_core.config import DatasetSpec, Params
from babelrs_core.data.layout import DATASET_DIRS, scenes_file
from babelrs_core.data.synth import fast, writers
from babelrs_core.data.synth.ir import draw_ir_settings, render_ir
from babelrs_core.data.synth.rgb import draw_rgb_settings, render_rgb
from babelrs_core.data.synth.sar import draw_sar_settings, render_sar
from babelrs_core.data.synth.scene import Render, Scene, caption, sample_scene
from babelrs_core.io.atomic import atomic_dir

#: DroneVehicle's raw typos (docs/soi_mini.md §5.3) written for a fraction of objects.
TYPOS = {"freight car": ("feright car", "feright_car"), "truck": ("truvk",)}


def image_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The random generator of one image (independent of every other image)."""
    return np.random.default_rng([seed, DATASET_NAMES.index(dataset), SPLITS.index(split), index])


def splits_of(spec: DatasetSpec) -> tuple[Split, ...]:
    """The splits of a dataset in canonical order."""
    return tuple(s for s in SPLITS if s in spec.splits)


def with_images_per_dataset(params: Params, n: int) -> Params:
    """``params`` with ``n`` images in every dataset, shared among its splits in proportion to
    their sizes in ``params`` (largest remainders; equally if they are all 0)."""
    if n < 0:
        raise ValueError(f"images per dataset must be >= 0, got {n}")
    out = params.model_copy(deep=True)
    for dataset in DATASET_NAMES:
        spec: DatasetSpec = getattr(out.soi_mini, dataset)
        names = splits_of(spec)
        weights = [spec.splits[s] for s in names]
        if not sum(weights):
            weights = [1] * len(names)
        quotas = [n * w / sum(weights) for w in weights]
        counts = [int(q) for q in quotas]
        by_remainder = sorted(range(len(names)), key=lambda i: (counts[i] - quotas[i], i))
        for i in by_remainder[: n - sum(counts)]:
            counts[i] += 1
        spec.splits = dict(zip(names, counts, strict=True))
    return out


def naming(params: Params, dataset: str, split: str, index: int) -> tuple[str, str]:
    """``(stem, image path relative to the raw root)`` of one image, as the real datasets name
    them: SARDet ``000001``.. and DOTA ``P0000``.. numbered across splits, DroneVehicle ``00001``..
    per split."""
    spec: DatasetSpec = getattr(params.soi_mini, dataset)
    order = splits_of(spec)
    before = sum(spec.splits[s] for s in order[: order.index(split)])
    root = DATASET_DIRS[dataset]
    if dataset == "sardet":
        stem = f"{before + index + 1:06d}"
        return stem, f"{root}/JPEGImages/{split}/{stem}.png"
    if dataset == "dota":
        stem = f"P{before + index:04d}"
        return stem, f"{root}/{split}/images/{stem}.png"
    stem = f"{index + 1:05d}"
    return stem, f"{root}/{split}/{split}imgr/{stem}.jpg"


def render_image(params: Params, dataset: str, split: str, index: int) -> tuple[Scene, Render]:
    """Draw and render one image exactly as :func:`generate_soi_mini` does.

    Returns the scene graph (sensor settings, object attributes and caption filled in) and the
    render (image, footprint layers, shadows). The image is the *unpadded* frame.
    """
    sm = params.soi_mini
    spec: DatasetSpec = getattr(sm, dataset)
    rng = image_rng(params.seed, dataset, split, index)
    stem, rel = naming(params, dataset, split, index)
    gsd = fast.gsd_of(sm, dataset)
    render: Render
    masks: fast.Masks | None = None
    if sm.render == "fast":
        scene, render, masks = fast.render(params, dataset, split, index, rng, stem, rel)
    else:
        scene = sample_scene(rng, dataset, split, index, stem, rel, spec, gsd, sm.layout)
        if dataset == "sardet":
            sar = draw_sar_settings(rng, sm.sar)
            if sar.jpeg_quality is not None:
                scene.image_file = rel[: -len(".png")] + ".jpg"
            render = render_sar(scene, sar, rng)
        elif dataset == "dota":
            render = render_rgb(scene, draw_rgb_settings(rng, sm.rgb, scene), rng)
        else:
            render = render_ir(scene, draw_ir_settings(rng, sm.ir, scene), rng)
    for o, extra in zip(scene.objects, render.object_attrs, strict=True):
        extra = dict(extra)
        colours = extra.pop("colours", None)
        if colours:
            extra["colour"] = next(iter(colours.values()))
        o.attrs.update(extra)
        if masks is None:
            ys, xs = np.nonzero(render.layers == o.index)
        else:  # the object's own window (the same pixels, without scanning the whole frame)
            win = masks[o.index][0]
            ys, xs = np.nonzero(render.layers[win.slices] == o.index)
            ys, xs = ys + win.y0, xs + win.x0
        o.attrs["hbox"] = [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ]
    scene.sensor = {"modality": DATASETS[dataset].modality, "gsd_m": gsd, **render.sensor}
    if dataset == "dronevehicle":
        _label_quirks(rng, scene, params)
    scene.caption = caption(scene)
    return scene, render


def _label_quirks(rng: np.random.Generator, scene: Scene, params: Params) -> None:
    """DroneVehicle's raw-label habits: class typos and ``<bndbox>`` instead of ``<polygon>``."""
    ir = params.soi_mini.ir
    scene.sensor["dji_filename"] = f"DJI_{int(rng.integers(1, 10000)):04d}"
    scene.sensor["folder"] = f"{int(rng.integers(1, 13))}-{int(rng.integers(1, 29))}"
    for o in scene.objects:
        typo, pick, box = rng.random(), rng.random(), rng.random()
        raw = o.cls
        if o.cls in TYPOS and typo < ir.label_typo_fraction:
            options = TYPOS[o.cls]
            raw = options[int(pick * len(options))]
        o.attrs["raw_name"] = raw
        o.attrs["label_geometry"] = "bndbox" if box < ir.bndbox_fraction else "polygon"


def _write_image(tmp: Path, scene: Scene, render: Render, params: Params) -> None:
    path = tmp / scene.image_file
    sm = params.soi_mini
    png_level = sm.fast.png_compress_level if sm.render == "fast" else None
    if scene.dataset == "sardet":
        writers.save_image(path, render.image, scene.sensor.get("jpeg_quality"), png_level)
    elif scene.dataset == "dota":
        writers.save_image(path, render.image, png_level=png_level)
    else:
        padded = writers.pad_border(writers.gray_to_rgb(render.image), params.soi_mini.ir.border_px)
        writers.save_image(path, padded, params.soi_mini.ir.jpeg_quality)


def _write_labels(tmp: Path, scene: Scene, params: Params) -> None:
    if scene.dataset == "dota":
        polygons = [
            (o.polygon().ravel().tolist(), o.cls, int(o.attrs.get("difficult", 0)))
            for o in scene.objects
        ]
        path = tmp / DATASET_DIRS["dota"] / scene.split / "labelTxt" / f"{scene.stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(writers.dota_text(polygons, params.soi_mini.rgb.gsd_m))
    elif scene.dataset == "dronevehicle":
        b = params.soi_mini.ir.border_px
        objs = [
            writers.VocObject(
                o.attrs["raw_name"],
                (o.polygon() + b).ravel().tolist(),
                use_bndbox=o.attrs["label_geometry"] == "bndbox",
            )
            for o in scene.objects
        ]
        xml = writers.dronevehicle_xml(
            scene.sensor["dji_filename"],
            scene.sensor["folder"],
            scene.width + 2 * b,
            scene.height + 2 * b,
            objs,
        )
        path = tmp / DATASET_DIRS["dronevehicle"] / scene.split / f"{scene.split}labelr"
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{scene.stem}.xml").write_text(xml)


def _jobs(params: Params) -> Iterator[tuple[str, str, int]]:
    for dataset in DATASET_NAMES:
        spec: DatasetSpec = getattr(params.soi_mini, dataset)
        for split in splits_of(spec):
            yield dataset, split, spec.splits[split]


def generate_soi_mini(
    params: Params, out: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Render SOI-mini into ``out`` (default ``params.paths.raw``) in the three real formats.

    Returns ``{dataset: {split: {"images": n, "objects": m}}}``.
    """
    out = Path(out if out is not None else params.paths.raw)
    jobs = list(_jobs(params))
    counts: dict[str, Any] = {}
    with (
        atomic_dir(out) as tmp,
        tqdm(
            total=sum(n for *_, n in jobs), desc="SOI-mini", unit="img", disable=not progress
        ) as bar,
    ):
        for dataset, split, n in jobs:
            root = tmp / DATASET_DIRS[dataset]
            records: list[dict[str, Any]] = []
            coco_images: list[dict[str, Any]] = []
            coco_anns: list[dict[str, Any]] = []
            n_obj = 0
            if dataset == "dota":
                (root / split / "images").mkdir(parents=True, exist_ok=True)
                (root / split / "labelTxt").mkdir(parents=True, exist_ok=True)
            elif dataset == "dronevehicle":
                (root / split / f"{split}imgr").mkdir(parents=True, exist_ok=True)
                (root / split / f"{split}labelr").mkdir(parents=True, exist_ok=True)
            else:
                (root / "JPEGImages" / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                scene, render = render_image(params, dataset, split, i)
                _write_image(tmp, scene, render, params)
                _write_labels(tmp, scene, params)
                if dataset == "sardet":
                    image_id = i + 1
                    coco_images.append(
                        {
                            "id": image_id,
                            "file_name": Path(scene.image_file).name,
                            "width": scene.width,
                            "height": scene.height,
                        }
                    )
                    for o in scene.objects:
                        coco_anns.append(
                            writers.coco_annotation(
                                len(coco_anns) + 1, image_id, o.cls, o.attrs["hbox"]
                            )
                        )
                records.append(scene.to_json())
                n_obj += len(scene.objects)
                bar.update(1)
            if dataset == "sardet":
                ann = root / "Annotations" / f"{split}.json"
                ann.parent.mkdir(parents=True, exist_ok=True)
                ann.write_text(writers.coco_text(writers.coco_document(coco_images, coco_anns)))
            sf = scenes_file(tmp, dataset, split)
            sf.parent.mkdir(parents=True, exist_ok=True)
            sf.write_text(writers.scenes_text(records))
            counts.setdefault(dataset, {})[split] = {"images": n, "objects": n_obj}
    return counts
