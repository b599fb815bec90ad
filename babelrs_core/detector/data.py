"""Detector data: manifest-backed mmengine datasets, transforms, the multi-source sampler.

* :class:`ManifestDetDataset` reads one dataset's split from the manifest (never mmdet's file-based
  datasets): one data item per image with its instances (horizontal box, oriented polygon, local
  label, ignore flag for DOTA ``difficult`` objects).
* :class:`LoadManifestSample` reads the image through the params' image source (loose files or
  shards, bounded LRU cache; :mod:`babelrs_core.data.image_source`), cropped to the manifest
  window, three channels, and builds the ground truth as mmdet box structures (``hbox`` ->
  ``HorizontalBoxes``; ``obox`` -> mmrotate ``RotatedBoxes`` from the polygons).
* :class:`RandomRot90` rotates image and boxes by a multiple of 90 degrees (aerial views; not SAR,
  whose look direction fixes the image geometry). Oriented-box sources can also get mmrotate's
  free ``RandomRotate`` (the reference's ``PolyRandomRotate``): only by multiples of 90 degrees
  when the image holds a class of :data:`RECT_CLASSES` (round objects whose box has no
  orientation).
* :class:`MultiSourceRatioSampler` fills every batch with a fixed number of images from each source
  (2:1:1 SAR:RGB:IR by default), drawn from per-source shuffled infinite streams, and supports
  mmengine's cheap ``skip`` on resume.

Normalisation is not done here: images stay uint8 and the model's
:class:`~babelrs_core.detector.model.ModalityDataPreprocessor` normalises each image with its
modality's statistics (so that checkpoints carry them).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.dataset import BaseDataset
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from babelrs_core.concepts import DATASETS as DATASET_INFO
from babelrs_core.data.image_source import FileSource, ImageRef, ImageSource, source_from_spec
from babelrs_core.data.manifest import images as manifest_images
from babelrs_core.data.manifest import read_manifest
from babelrs_core.models.encoders import NormStats

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def image_items(
    frame: pd.DataFrame, dataset: str, split: str, ignore_difficult: bool = True
) -> list[dict[str, Any]]:
    """One data item per image of ``dataset``/``split``: metadata and instances (local labels)."""
    info = DATASET_INFO[dataset]
    names = list(info.class_names)
    sub = frame[(frame["dataset"] == dataset) & (frame["split"] == split)]
    items = []
    for image_id, rows in sub.groupby("image_id", sort=True):
        first = rows.iloc[0]
        instances = []
        for r in rows[rows["object_index"] >= 0].itertuples():
            poly = list(r.poly) if r.poly is not None else None
            instances.append(
                {
                    "bbox": [float(r.x1), float(r.y1), float(r.x2), float(r.y2)],
                    "poly": poly,
                    "bbox_label": names.index(r.class_name),
                    "ignore_flag": int(bool(r.difficult) and ignore_difficult),
                }
            )
        items.append(
            {
                "img_id": str(image_id),
                "img_path": str(first["path"]),
                "crop_x": int(first["crop_x"]),
                "crop_y": int(first["crop_y"]),
                "width": int(first["width"]),
                "height": int(first["height"]),
                "dataset": dataset,
                "modality": info.modality,
                "instances": instances,
            }
        )
    return items


def label_subset(image_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The ``fraction`` of ``image_ids`` kept for training: ``max(1, floor(fraction * n + 0.5))``
    images (round half up), the first in the order of ``sha256(seed, image id)``, returned in
    their input order. Deterministic for a seed and independent of the input order; nested: a
    smaller fraction keeps a subset of a larger one's images (same seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction}: expected 0 < fraction <= 1")
    ids = list(image_ids)
    if fraction >= 1 or not ids:
        return ids
    keep = min(len(ids), max(1, math.floor(fraction * len(ids) + 0.5)))

    def rank(image_id: str) -> bytes:
        return hashlib.sha256(f"{seed}:{image_id}".encode()).digest()

    chosen = set(sorted(ids, key=rank)[:keep])
    return [i for i in ids if i in chosen]


@DATASETS.register_module()
class ManifestDetDataset(BaseDataset):
    """One source (dataset + split) of the manifest as an mmengine dataset; ``fraction`` < 1 keeps
    a seeded subset of its images (:func:`label_subset` with ``fraction_seed``; training only)."""

    def __init__(
        self,
        manifest: str,
        dataset: str,
        split: str = "train",
        ignore_difficult: bool = True,
        pipeline: Sequence[dict | Any] = (),
        test_mode: bool = False,
        frame: pd.DataFrame | None = None,
        fraction: float = 1.0,
        fraction_seed: int = 0,
    ) -> None:
        if dataset not in DATASET_INFO:
            raise KeyError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_INFO)}")
        self.manifest = str(manifest)
        self.dataset_name = dataset
        self.split = split
        self.ignore_difficult = ignore_difficult
        self.fraction, self.fraction_seed = float(fraction), int(fraction_seed)
        self._frame = frame
        info = DATASET_INFO[dataset]
        super().__init__(
            ann_file="",
            metainfo={"classes": info.class_names},
            pipeline=list(pipeline),
            test_mode=test_mode,
            serialize_data=False,
        )
        # set after init: mmengine would try to read plain strings in metainfo as files
        self._metainfo.update(dataset=dataset, modality=info.modality)

    def load_data_list(self) -> list[dict[str, Any]]:
        frame = self._frame if self._frame is not None else read_manifest(self.manifest)
        self._frame = None  # do not keep the whole manifest per dataset
        items = image_items(frame, self.dataset_name, self.split, self.ignore_difficult)
        if not items:
            raise ValueError(
                f"{self.manifest}: no {self.dataset_name} images in split {self.split!r}"
            )
        if self.fraction < 1:
            kept = set(
                label_subset([i["img_id"] for i in items], self.fraction, self.fraction_seed)
            )
            items = [i for i in items if i["img_id"] in kept]
        return items


@TRANSFORMS.register_module()
class LoadManifestSample(BaseTransform):
    """Image (cropped, 3 channels, uint8) and ground truth as mmdet box structures.

    ``source`` is the params' image source (:func:`~babelrs_core.data.image_source.source_spec`;
    None: the loose files, no cache)."""

    def __init__(
        self, box_type: str = "hbox", with_ann: bool = True, source: dict | None = None
    ) -> None:
        self.box_type = box_type
        self.with_ann = with_ann
        self.source = source

    def transform(self, results: dict) -> dict:
        img = source_from_spec(self.source).load(ImageRef.of_item(results))
        results["img"] = img if img.flags.writeable else img.copy()
        results["img_shape"] = img.shape[:2]
        results["ori_shape"] = img.shape[:2]
        if self.with_ann:
            inst = results.get("instances", [])
            labels = np.array([i["bbox_label"] for i in inst], dtype=np.int64)
            results["gt_bboxes"] = make_boxes(inst, self.box_type)
            results["gt_bboxes_labels"] = labels
            results["gt_ignore_flags"] = np.array([i["ignore_flag"] for i in inst], dtype=bool)
        return results


def make_boxes(instances: list[dict[str, Any]], box_type: str) -> Any:
    """Ground-truth boxes of a data item as the mmdet / mmrotate box type of its head."""
    if box_type == "hbox":
        arr = np.array([i["bbox"] for i in instances], dtype=np.float32).reshape(-1, 4)
        return HorizontalBoxes(arr)
    if box_type == "obox":
        from mmrotate.structures.bbox import RotatedBoxes

        from babelrs_core.detector.rbox import poly_to_rbox

        missing = [n for n, i in enumerate(instances) if i.get("poly") is None]
        if missing:
            raise ValueError(
                f"box_type obox needs polygons; instances {missing[:5]} have none (use hbox "
                "for datasets without oriented annotations)"
            )
        return RotatedBoxes(poly_to_rbox([i["poly"] for i in instances]))
    raise ValueError(f"unknown box_type {box_type!r}; expected hbox | obox")


@TRANSFORMS.register_module()
class RandomRot90(BaseTransform):
    """Rotate image and boxes by 90, 180 or 270 degrees (uniformly) with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        k = int(np.random.randint(1, 4))  # counter-clockwise quarter turns (np.rot90 sense)
        img = results["img"]
        h, w = img.shape[:2]
        results["img"] = np.ascontiguousarray(np.rot90(img, k))
        results["img_shape"] = results["img"].shape[:2]
        boxes = results.get("gt_bboxes")
        if boxes is not None and len(boxes):
            results["gt_bboxes"] = rot90_boxes(boxes, k, w, h)
        results["rot90"] = k
        return results


def rot90_boxes(boxes: Any, k: int, width: int, height: int) -> Any:
    """Boxes after ``np.rot90(img, k)`` of a ``width`` x ``height`` image."""
    if isinstance(boxes, HorizontalBoxes):
        t = boxes.tensor.clone()
        for _ in range(k % 4):
            x1, y1, x2, y2 = t.unbind(-1)
            # one CCW quarter turn maps a point (x, y) to (y, W - x)
            t = torch.stack([y1, width - x2, y2, width - x1], -1)
            width, height = height, width
        return HorizontalBoxes(t)
    # oriented boxes: turn the corner points exactly, then back to the box type
    from mmrotate.structures.bbox import QuadriBoxes

    q = boxes.convert_to("qbox").tensor.clone()
    for _ in range(k % 4):
        xs, ys = q[:, 0::2], q[:, 1::2]
        q = torch.stack([ys, width - xs], -1).reshape(-1, 8)
        width, height = height, width
    return QuadriBoxes(q).convert_to("rbox")


#: classes rotated only by multiples of 90 degrees under free rotation (the reference's
#: ``rect_classes`` of ``PolyRandomRotate``: round objects, whose box angle is arbitrary)
RECT_CLASSES: dict[str, tuple[str, ...]] = {"dota": ("roundabout", "storage-tank")}


def train_pipeline(
    box_type: str,
    image_size: int,
    hflip: float,
    vflip: float,
    rot90: float,
    source: dict[str, Any] | None,
    rotate: float = 0.0,
    rotate_range: float = 180.0,
    dataset: str | None = None,
    crop: int | None = None,
) -> list[dict[str, Any]]:
    """The mmcv pipeline of one source: load, resize (keep ratio), random crop, flips, rot90, free
    rotation (``obox`` only: a rotated horizontal box would only grow), pack.

    ``crop`` cuts a random ``crop x crop`` window at the resized scale (objects keep their size;
    fewer pixels per step), keeping the objects whose centre (obox) or clipped box (hbox) is inside
    it; a window without any object is drawn again on another image (mmengine's refetch)."""
    pipe: list[dict[str, Any]] = [
        {"type": "LoadManifestSample", "box_type": box_type, "source": source},
        {"type": "Resize", "scale": (image_size, image_size), "keep_ratio": True},
    ]
    if crop is not None and crop < image_size:
        pipe.append(
            {
                "type": "RandomCrop",
                "crop_size": (crop, crop),
                "allow_negative_crop": False,
                "bbox_clip_border": box_type == "hbox",  # RotatedBoxes cannot be clipped
            }
        )
    # two independent flips: the probabilities are exactly the params'
    if hflip > 0:
        pipe.append({"type": "RandomFlip", "prob": hflip, "direction": "horizontal"})
    if vflip > 0:
        pipe.append({"type": "RandomFlip", "prob": vflip, "direction": "vertical"})
    if rot90 > 0:
        pipe.append({"type": "RandomRot90", "prob": rot90})
    if rotate > 0 and box_type == "obox":
        rect = RECT_CLASSES.get(dataset or "", ())
        names = list(DATASET_INFO[dataset].class_names) if dataset else []
        pipe.append(
            {
                "type": "mmrotate.RandomRotate",
                "prob": rotate,
                "angle_range": rotate_range,
                "rect_obj_labels": [names.index(c) for c in rect] or None,
                "rotate_type": "mmrotate.Rotate",
            }
        )
    pipe.append({"type": "PackDetInputs", "meta_keys": META_KEYS})
    return pipe


META_KEYS = (
    "img_id",
    "img_path",
    "ori_shape",
    "img_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "dataset",
    "modality",
)


@DATA_SAMPLERS.register_module()
class MultiSourceRatioSampler(Sampler):
    """Infinite sampler over a ``ConcatDataset``: every run of ``batch_size`` indices holds exactly
    ``batch_size * ratio[i] / sum(ratio)`` images of source ``i``, in source order.

    Each source is an independent shuffled infinite stream (a new permutation per pass, seeded by
    ``seed`` and the source index); ranks take interleaved elements of every stream. Use it with a
    DataLoader of the same ``batch_size`` (the per-process batch). With ``W`` ranks of batch ``b``
    the union of the ranks' step-``k`` batches is exactly the step-``k`` batch of one process with
    batch ``W x b`` (same images of every source, per source in another order). ``rank`` /
    ``world_size`` default to mmengine's view of the process group.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        source_ratio: Sequence[int],
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        sources = getattr(dataset, "datasets", None)
        if sources is None:
            raise TypeError("MultiSourceRatioSampler needs a ConcatDataset of the sources")
        if len(source_ratio) != len(sources):
            raise ValueError(f"{len(source_ratio)} ratios for {len(sources)} sources")
        total = sum(source_ratio)
        if batch_size % total:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {total}")
        self.sizes = [len(d) for d in sources]
        if min(self.sizes) == 0:
            raise ValueError(f"a source is empty (sizes {self.sizes})")
        self.offsets = [0, *itertools.accumulate(self.sizes)][:-1]
        self.counts = [batch_size * r // total for r in source_ratio]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.rank, self.world_size = get_dist_info()
        if rank is not None or world_size is not None:
            self.rank, self.world_size = int(rank or 0), int(world_size or 1)
        self._total = sum(self.sizes)
        self._skip = 0

    def _stream(self, source: int) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1000 + source)
        size, offset = self.sizes[source], self.offsets[source]
        while True:
            order = torch.randperm(size, generator=g) if self.shuffle else torch.arange(size)
            yield from (offset + order).tolist()

    def _indices(self) -> Iterator[int]:
        streams = [
            itertools.islice(self._stream(s), self.rank, None, self.world_size)
            for s in range(len(self.sizes))
        ]
        while True:
            for stream, n in zip(streams, self.counts, strict=True):
                for _ in range(n):
                    yield next(stream)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._indices(), self._skip, None)

    def skip(self, num_samples: int) -> None:
        """Start the next iteration after ``num_samples`` indices (mmengine's resume contract)."""
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self._skip = int(num_samples)

    def __len__(self) -> int:
        return self._total

    def set_epoch(self, epoch: int) -> None:
        """Infinite streams: epochs do not exist (mmengine calls this anyway)."""


def modality_statistics(
    manifest: str | Path | pd.DataFrame,
    modalities: Sequence[str],
    split: str = "train",
    max_images: int = 200,
    seed: int = 0,
    source: ImageSource | None = None,
) -> dict[str, NormStats]:
    """Per-modality, per-channel mean and std (0..255) of up to ``max_images`` training images."""
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    imgs = manifest_images(frame)
    out: dict[str, NormStats] = {}
    rng = np.random.default_rng(seed)
    for mod in modalities:
        sel = imgs[(imgs["modality"] == mod) & (imgs["split"] == split)]
        if sel.empty:
            raise ValueError(f"no {split} images of modality {mod!r} to compute statistics from")
        if len(sel) > max_images:
            sel = sel.iloc[np.sort(rng.choice(len(sel), max_images, replace=False))]
        s = np.zeros(3)
        s2 = np.zeros(3)
        n = 0
        for r in sel.itertuples():
            x = (source or FileSource()).load(ImageRef.of_row(r)).reshape(-1, 3)
            x = x.astype(np.float64)
            s += x.sum(0)
            s2 += (x**2).sum(0)
            n += len(x)
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0)).clip(min=1.0)
        out[mod] = {
            "mean": [round(float(v), 4) for v in mean],
            "std": [round(float(v), 4) for v in std],
        }
    return out
