"""Pretraining data: images from the manifest, CSIA instructions, per-modality normalisation,
deterministic batch sampling and collation into LM inputs.

The batch of step ``t`` is a pure function of ``(seed, t)``, so a resumed run sees exactly the
batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from babelrs_core.data.captions import read_captions
from babelrs_core.data.image_source import CachedSource, FileSource, ImageRef, ImageSource
from babelrs_core.data.manifest import images as manifest_images
from babelrs_core.data.manifest import objects as manifest_objects
from babelrs_core.data.manifest import read_manifest
from babelrs_core.models.encoders import NormStats
from babelrs_core.pretrain.instructions import (
    TASKS,
    Box,
    ImageLabels,
    Instruction,
    build_instructions,
    flip_unit,
    flipped,
    ordered_classes,
)

IGNORE = -100
#: tokens that follow ``</box>`` in region prompts: the RoI feature and the box size
REGION_SLOTS = 2


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def labels_from_manifest(frame: pd.DataFrame, captions: dict[str, str]) -> list[ImageLabels]:
    """One :class:`ImageLabels` per image of ``frame`` (manifest rows)."""
    boxes: dict[str, list[Box]] = defaultdict(list)
    for r in manifest_objects(frame).itertuples(index=False):
        boxes[r.image_id].append(Box(r.class_name, r.x1, r.y1, r.x2, r.y2))
    return [
        ImageLabels(
            r.image_id,
            r.dataset,
            r.modality,
            int(r.width),
            int(r.height),
            boxes[r.image_id],
            captions.get(r.image_id),
        )
        for r in manifest_images(frame).itertuples(index=False)
    ]


def token_ids(ids: Sequence[int]) -> array[int]:
    """Token ids held compactly (4 bytes each instead of a Python int object and a pointer):
    millions of prompts at SOI-Det size."""
    return array("i", ids)


UnitBox = tuple[float, float, float, float]  # x1 y1 x2 y2 in 0..1


@dataclass(slots=True)
class Encoded:
    """A tokenised instruction (token ids as :func:`token_ids` arrays)."""

    image: int  # row in the image cache
    modality: str
    task: str
    question: Sequence[int]
    answer: Sequence[int]  # answer tokens + eos
    text: Instruction
    region_at: int = -1  # index in ``question`` of the first region slot, -1 if none
    #: (question, region_at) of the flipped image for flip codes 1 (h), 2 (v), 3 (h+v); None when
    #: the prompt does not depend on flips
    variants: list[tuple[Sequence[int], int]] | None = None

    def view(
        self, flip: int
    ) -> tuple[Sequence[int], int, tuple[float, float, float, float] | None]:
        """Question ids, region slot and 0..1 box as seen on an image flipped by ``flip``."""
        box = self.text.box
        if flip == 0 or self.variants is None:
            return self.question, self.region_at, box
        q, at = self.variants[flip - 1]
        return q, at, flip_unit(box, bool(flip & 1), bool(flip & 2)) if box else None


@dataclass
class Batch:
    """Collated text; the model builds ``[bos] <visual> text`` from it."""

    images: torch.Tensor  # (B, 3, S, S) float, normalised per modality
    text_ids: torch.Tensor  # (B, L) question [sep] answer [eos], right-padded
    text_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L) answer tokens, IGNORE elsewhere
    modalities: list[str]
    tasks: list[str]
    region_at: torch.Tensor  # (B,) column of the region-token slot in ``text_ids``, -1 if none
    boxes: torch.Tensor  # (B, 4) region box, x1 y1 x2 y2 in 0..1 (zeros if none)
    drop_prefix: torch.Tensor | None = None  # (B,) bool: hide the image tokens (region prompts)
    drop_roi: torch.Tensor | None = None  # (B,) bool: hide the region token's RoI feature


@dataclass
class PretrainData:
    """Images (cached at ``image_size``), instructions and normalisation statistics."""

    image_size: int
    image_ids: list[str]
    image_modality: list[str]
    pixels: PixelStore  # rows -> (n, 3, S, S) uint8
    train: list[Encoded]
    heldout: list[Encoded]
    classes: dict[str, list[str]]  # dataset -> class list offered in region prompts
    norm: dict[str, NormStats]  # modality -> {"mean": [3], "std": [3]} (0..255)
    sep_ids: list[int] = field(default_factory=list)
    pad_id: int = 0
    task_weights: dict[str, float] = field(default_factory=dict)
    hflip: float = 0.0  # training-time flip probabilities (aerial views have no "up")
    vflip: float = 0.0
    region_prefix_dropout: float = 0.0  # region prompts: P(image tokens hidden)
    region_roi_dropout: float = 0.0  # region prompts: P(RoI feature hidden, box size kept)
    _weights: torch.Tensor | None = None

    def counts(self) -> dict[str, Any]:
        """Prompts and images of the training and held-out sets, and the classes offered (the
        ``data`` block of a pretraining run's ``metrics.json``)."""
        return {
            "train_prompts": len(self.train),
            "heldout_prompts": len(self.heldout),
            "train_images": len({e.image for e in self.train}),
            "heldout_images": len({e.image for e in self.heldout}),
            "classes": self.classes,
        }

    # -- sampling -------------------------------------------------------------------------------
    def sampling_weights(self) -> torch.Tensor:
        """Per-prompt probability: modalities equally likely, tasks by weight within a modality,
        prompts uniform within (modality, task)."""
        if self._weights is None:
            groups: dict[tuple[str, str], int] = defaultdict(int)
            for e in self.train:
                groups[(e.modality, e.task)] += 1
            mods = sorted({m for m, _ in groups})
            w = torch.zeros(len(self.train), dtype=torch.float64)
            for i, e in enumerate(self.train):
                tasks = [t for (m, t) in groups if m == e.modality]
                total = sum(self.task_weights.get(t, 1.0) for t in tasks)
                if total <= 0:
                    continue
                w[i] = (
                    self.task_weights.get(e.task, 1.0)
                    / total
                    / groups[(e.modality, e.task)]
                    / len(mods)
                )
            if float(w.sum()) <= 0:
                raise ValueError("pretraining: every task weight is 0, nothing to sample")
            self._weights = w
        return self._weights

    def draw(self, step: int, batch_size: int, seed: int) -> tuple[list[int], list[int], list[int]]:
        """Indices into ``train``, flip codes (bit 0: left-right, bit 1: top-bottom) and
        visual-dropout codes (bit 0: image tokens, bit 1: RoI feature; region prompts only) for
        optimizer step ``step``: a pure function of seed and step."""
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
        idx = torch.multinomial(self.sampling_weights(), batch_size, True, generator=g).tolist()
        u = torch.rand(batch_size, 2, generator=g)
        flips = ((u[:, 0] < self.hflip).long() + 2 * (u[:, 1] < self.vflip).long()).tolist()
        d = torch.rand(batch_size, 2, generator=g)
        drop = (d[:, 0] < self.region_prefix_dropout).long() + 2 * (
            d[:, 1] < self.region_roi_dropout
        ).long()
        drops = [
            c if self.train[i].region_at >= 0 else 0
            for i, c in zip(idx, drop.tolist(), strict=True)
        ]
        return idx, flips, drops

    def sample(self, step: int, batch_size: int, seed: int) -> list[int]:
        """Indices into ``train`` for optimizer step ``step`` (see :meth:`draw`)."""
        return self.draw(step, batch_size, seed)[0]

    # -- tensors --------------------------------------------------------------------------------
    def normalized(self, rows: Sequence[int], flips: Sequence[int] | None = None) -> torch.Tensor:
        """Float images of cache ``rows`` (flipped by ``flips``), normalised per modality."""
        x = self.pixels[list(rows)].float()
        for i, f in enumerate(flips or []):
            dims = [d for bit, d in ((1, 2), (2, 1)) if f & bit]  # (C, H, W): W = 2, H = 1
            if dims:
                x[i] = x[i].flip(dims)
        mean = torch.tensor([self.norm[self.image_modality[r]]["mean"] for r in rows])
        std = torch.tensor([self.norm[self.image_modality[r]]["std"] for r in rows])
        return (x - mean[:, :, None, None]) / std[:, :, None, None]

    def collate(
        self,
        items: Sequence[Encoded],
        with_answer: bool = True,
        flips: Sequence[int] | None = None,
        drops: Sequence[int] | None = None,
    ) -> Batch:
        """Right-padded ``question [sep] answer [eos]`` (prompt only unless ``with_answer``) on
        images flipped by ``flips``, with visual-dropout codes ``drops`` (default: none)."""
        flips = list(flips) if flips is not None else [0] * len(items)
        views = [e.view(f) for e, f in zip(items, flips, strict=True)]
        seqs, labels = [], []
        for e, (question, _, _) in zip(items, views, strict=True):
            prompt = [*question, *self.sep_ids]
            answer = list(e.answer) if with_answer else []
            seqs.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)
        n = max(len(s) for s in seqs)
        ids = torch.full((len(items), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        lab = torch.full((len(items), n), IGNORE, dtype=torch.long)
        for i, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            lab[i, : len(lb)] = torch.tensor(lb)
        return Batch(
            self.normalized([e.image for e in items], flips),
            ids,
            mask,
            lab,
            [e.modality for e in items],
            [e.task for e in items],
            torch.tensor([at for _, at, _ in views], dtype=torch.long),
            torch.tensor([box or (0.0, 0.0, 0.0, 0.0) for _, _, box in views], dtype=torch.float32),
            torch.tensor([bool(c & 1) for c in drops]) if drops is not None else None,
            torch.tensor([bool(c & 2) for c in drops]) if drops is not None else None,
        )


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(arr)
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR))


class _Resized:
    """An image source whose images are resized to ``size`` x ``size``."""

    def __init__(self, inner: ImageSource, size: int) -> None:
        self.inner, self.size = inner, size

    def load(self, ref: ImageRef) -> np.ndarray:
        return _resize(self.inner.load(ref), self.size)


class PixelStore:
    """The pretraining images by row, resized to ``size``: ``store[rows]`` is an
    ``(n, 3, S, S)`` uint8 tensor.

    When all of them fit ``max_bytes`` they are decoded once and held (SOI-mini: ~10 MB);
    otherwise they are decoded on demand through a bounded LRU cache of resized images, so memory
    is set by ``max_bytes``, not by the number of images. Both give the same pixels.
    """

    def __init__(
        self, refs: Sequence[ImageRef], size: int, source: ImageSource, max_bytes: int
    ) -> None:
        self.refs, self.size = list(refs), size
        resized = _Resized(source, size)
        self.preloaded = len(self.refs) * 3 * size * size <= max_bytes
        if self.preloaded:
            rows = [self._tensor(resized.load(r)) for r in self.refs]
            self._all = (
                torch.stack(rows) if rows else torch.zeros((0, 3, size, size), dtype=torch.uint8)
            )
        else:
            self._lru = CachedSource(resized, max_bytes)

    @staticmethod
    def _tensor(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, rows: Sequence[int]) -> torch.Tensor:
        if self.preloaded:
            return self._all[list(rows)]
        if not rows:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.stack([self._tensor(self._lru.load(self.refs[r])) for r in rows])


def modality_stats(
    pixels: PixelStore | torch.Tensor,
    modality: Sequence[str],
    rows: Sequence[int],
    chunk: int = 256,
) -> dict:
    """Per-modality, per-channel mean and std (0..255) over ``rows`` (training images), streamed
    ``chunk`` images at a time (exact integer sums, so the chunking does not change them).

    One-channel sensors (grey files replicated to three channels) get identical channel values.
    """
    out: dict[str, NormStats] = {}
    for mod in sorted({modality[r] for r in rows}):
        sel = [r for r in rows if modality[r] == mod]
        s, s2, n = [0, 0, 0], [0, 0, 0], 0
        for at in range(0, len(sel), chunk):
            x = pixels[sel[at : at + chunk]].long().permute(1, 0, 2, 3).reshape(3, -1)
            s = [a + int(b) for a, b in zip(s, x.sum(1).tolist(), strict=True)]
            s2 = [a + int(b) for a, b in zip(s2, (x * x).sum(1).tolist(), strict=True)]
            n += x.shape[1]
        mean = [a / n for a in s]
        var = [
            (n * b - a * a) / (n * (n - 1)) if n > 1 else 0.0 for a, b in zip(s, s2, strict=True)
        ]
        out[mod] = {
            "mean": [round(v, 4) for v in mean],
            "std": [round(max(v**0.5, 1.0), 4) for v in var],
        }
    return out


def build_data(
    manifest: str | os.PathLike[str],
    tokenizer_encode,
    *,
    image_size: int,
    holdout_fraction: float,
    eval_splits: Sequence[str],
    seed: int,
    captions: str | os.PathLike[str] | None = None,
    max_prompt_tokens: int = 96,
    max_answer_tokens: int = 32,
    eos_id: int,
    sep_ids: Sequence[int] = (),
    pad_id: int = 0,
    task_weights: dict[str, float] | None = None,
    eval_max_per_task: int | None = None,
    region_token: bool = False,
    hflip: float = 0.0,
    vflip: float = 0.0,
    region_prefix_dropout: float = 0.0,
    region_roi_dropout: float = 0.0,
    source: ImageSource | None = None,
    max_pixel_bytes: int = 2 << 30,
) -> PretrainData:
    """Read the manifest, hold out images, build and tokenise instructions, cache pixels.

    Training prompts come from the ``train`` split minus a ``holdout_fraction`` of its images
    (chosen by a hash of seed and image id); held-out prompts come from those images plus the
    ``eval_splits``. The detector's evaluation images are never trained on.
    """
    source = source or FileSource()
    frame = read_manifest(manifest)
    frame = frame[frame["split"].isin(["train", *eval_splits])]
    if frame.empty:
        raise ValueError(f"{manifest}: no images in splits train/{'/'.join(eval_splits)}")
    labels = labels_from_manifest(frame, read_captions(captions) if captions else {})
    classes = {
        ds: ordered_classes(ds, [c for c in g["class_name"].dropna().unique()])
        for ds, g in frame.groupby("dataset")
    }
    split_of = dict(zip(frame["image_id"], frame["split"], strict=False))
    paths = manifest_images(frame).set_index("image_id")
    weights = {t: 1.0 for t in TASKS} | (task_weights or {})

    refs: list[ImageRef] = []
    ids: list[str] = []
    mods: list[str] = []
    train: list[Encoded] = []
    heldout: list[Encoded] = []
    train_rows: list[int] = []
    for img in labels:
        if not classes.get(img.dataset):
            continue
        row = paths.loc[img.image_id]
        refs.append(
            ImageRef(
                img.image_id,
                row["path"],
                int(row["crop_x"]),
                int(row["crop_y"]),
                img.width,
                img.height,
            )
        )
        r = len(ids)
        ids.append(img.image_id)
        mods.append(img.modality)
        is_train = (
            split_of[img.image_id] == "train" and _unit_hash(seed, img.image_id) >= holdout_fraction
        )
        if is_train:
            train_rows.append(r)
        target = train if is_train else heldout
        for ins in build_instructions(img, classes[img.dataset], seed):
            if weights.get(ins.task, 1.0) <= 0:
                continue
            q, at = _question_ids(tokenizer_encode, ins, region_token, pad_id, max_prompt_tokens)
            a = [*tokenizer_encode(" " + ins.answer)[: max_answer_tokens - 1], eos_id]
            variants: list[tuple[Sequence[int], int]] | None = None
            if is_train and ins.box is not None and (hflip > 0 or vflip > 0):
                variants = []
                for c in (1, 2, 3):
                    seen = flipped(ins, bool(c & 1), bool(c & 2))
                    vq, vat = _question_ids(
                        tokenizer_encode, seen, region_token, pad_id, max_prompt_tokens
                    )
                    variants.append((token_ids(vq), vat))
            encoded = Encoded(
                r, ins.modality, ins.task, token_ids(q), token_ids(a), ins, at, variants
            )
            target.append(encoded)
    if not train:
        raise ValueError(f"{manifest}: no training prompts (empty train split or all held out)")
    if eval_max_per_task is not None:
        heldout = _cap(heldout, eval_max_per_task, seed)
    pixels = PixelStore(refs, image_size, source, max_pixel_bytes)
    return PretrainData(
        image_size,
        ids,
        mods,
        pixels,
        train,
        heldout,
        classes,
        modality_stats(pixels, mods, train_rows),
        list(sep_ids),
        pad_id,
        weights,
        hflip,
        vflip,
        region_prefix_dropout,
        region_roi_dropout,
    )


def _question_ids(
    encode,
    ins: Instruction,
    region_token: bool,
    slot_id: int,
    limit: int,
) -> tuple[list[int], int]:
    """Question tokens; with ``region_token`` two slots (RoI feature, box size) follow </box>."""
    end = ins.question.find("</box>")
    if not region_token or ins.box is None or end < 0:
        return encode(ins.question)[:limit], -1
    end += len("</box>")
    head, tail = encode(ins.question[:end]), encode(ins.question[end:])
    ids = [*head, *[slot_id] * REGION_SLOTS, *tail][:limit]
    return ids, (len(head) if len(head) + REGION_SLOTS <= len(ids) else -1)


def _cap(items: list[Encoded], per_group: int, seed: int) -> list[Encoded]:
    """At most ``per_group`` prompts per (modality, task), chosen by hash (reproducible)."""
    groups: dict[tuple[str, str], list[Encoded]] = defaultdict(list)
    for e in items:
        groups[(e.modality, e.task)].append(e)
    out = []
    for key in sorted(groups):
        g = sorted(groups[key], key=lambda e: _unit_hash(seed, e.text.image_id, e.text.question))
        out += g[:per_group]
    return out
