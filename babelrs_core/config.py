"""Pydantic models of ``params.yaml``.

Every default below equals the value in ``params.yaml`` (the shipped, measured recipe), so a
section or key left out of a params file means what the shipped file says;
tests/test_params_drift.py fails on any key where the two differ.

Loading validates everything at once: a wrong type, a negative size, an unknown modality or encoder
fails with a :class:`ConfigError` naming the file, the dotted key and the allowed values, before any
work starts. Unknown keys are errors too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from babelrs_core.concepts import DATASET_NAMES, DATASETS, DatasetName, Modality, Split
from babelrs_core.errors import BadInputError

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegFloat = Annotated[float, Field(ge=0)]
EncoderName = Literal["efficientnet_lite0", "vit_tiny", "vit_small", "vit_base", "vit_large"]

DEFAULT_PARAMS = Path("params.yaml")


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Range(Strict):
    """A closed interval [lo, hi] a generator draws from."""

    lo: float
    hi: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.hi < self.lo:
            raise ValueError(f"hi ({self.hi}) must be >= lo ({self.lo})")
        return self


class ImageSize(Strict):
    """Width and height in pixels."""

    width: PosInt
    height: PosInt


class Paths(Strict):
    """Where each stage reads and writes, relative to the project root."""

    raw: Path = Path("data/raw/soi_mini")
    manifest: Path = Path("data/manifest/soi_mini.parquet")
    # scene captions of the manifest's images; null: beside the manifest (captions_beside)
    captions: Path | None = None
    preview: Path = Path("docs/img/soi_mini_preview.png")
    pretrain_out: Path = Path("outputs/pretrain")
    finetune_out: Path = Path("outputs/finetune")
    eval_out: Path = Path("outputs/eval")

    @model_validator(mode="after")
    def _captions_beside_manifest(self) -> Paths:
        if self.captions is None:
            self.captions = captions_beside(self.manifest)
        return self


def captions_beside(manifest: Path) -> Path:
    """The captions table that goes with ``manifest``: ``<stem>.captions.parquet`` beside it."""
    return Path(manifest).with_name(f"{Path(manifest).stem}.captions.parquet")


def captions_for(params: Params, manifest: str | os.PathLike[str]) -> Path:
    """``paths.captions`` for the params' manifest; the table beside any other manifest."""
    if Path(manifest) == Path(params.paths.manifest) and params.paths.captions is not None:
        return params.paths.captions
    return captions_beside(Path(manifest))


class SarSensor(Strict):
    """SAR sensor model (docs/soi_mini.md §6.1)."""

    looks: list[PosInt] = [1, 2, 3, 4, 5]
    incidence_deg: Range = Range(lo=20, hi=45)
    gsd_m: PosFloat = 1.0
    psf_sigma_px: Range = Range(lo=0.5, hi=1.0)
    nesz_db: Range = Range(lo=-25, hi=-22)
    scatterer_gain_db: Range = Range(lo=10, hi=30)
    jpeg_fraction: Fraction = 0.0
    jpeg_quality: Range = Range(lo=85, hi=95)  # for the jpeg_fraction of images saved as .jpg
    db_clip_percentiles: Range = Range(lo=0.5, hi=99.9)  # dB display range -> 8 bit


class IrSensor(Strict):
    """Thermal (LWIR) sensor model (docs/soi_mini.md §6.2)."""

    night_fraction: Fraction = 0.4
    running_fraction: Fraction = 0.5
    gsd_m: PosFloat = 0.125  # 640 x 512 core, 17 um pitch, 13 mm lens at 80-120 m
    blur_sigma_px: Range = Range(lo=0.8, hi=1.5)
    netd_k: Range = Range(lo=0.03, hi=0.08)
    fixed_pattern: Range = Range(lo=0.002, hi=0.01)
    sky_k: Range = Range(lo=230, hi=270)
    border_px: NonNegInt = 100
    min_contrast_k: PosFloat = 4.0  # least |target - surrounding| apparent temperature (K)
    agc_percentiles: Range = Range(lo=1, hi=99)  # AGC stretch to 8 bit
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 95  # DroneVehicle files are JPEG
    label_typo_fraction: Fraction = 0.1  # freight car / truck written as feright* / truvk
    bndbox_fraction: Fraction = 0.05  # objects written with <bndbox> instead of <polygon>


class RgbSensor(Strict):
    """Optical aerial sensor model (docs/soi_mini.md §6.3)."""

    gsd_m: PosFloat = 0.3
    sun_elevation_deg: Range = Range(lo=20, hi=70)
    blur_sigma_px: Range = Range(lo=0.5, hi=1.0)
    haze: Range = Range(lo=0.0, hi=0.15)
    jpeg_quality: Range = Range(lo=70, hi=95)
    difficult_min_px: PosFloat = 9.3  # sqrt(box area) below this (px) -> DOTA difficult=1
    difficult_shadowed_fraction: Fraction = 0.5  # footprint share in others' shadows -> difficult


class SceneLayout(Strict):
    """How SOI-mini composes a scene: land cover and object placement (docs/soi_mini.md §6)."""

    same_class_fraction: Fraction = 0.6  # chance an object repeats the image's first class
    water_fraction: Fraction = 0.3  # chance of water in a scene whose classes do not need it
    road_fraction: Fraction = 0.5  # chance of a road in a scene without vehicles
    lot_fraction: Fraction = 0.5  # chance of a parking lot / apron with vehicles or aircraft
    min_gap_m: NonNegFloat = 0.5  # least free space between object boxes
    max_tries: PosInt = 40  # rejection-sampling attempts per object


class FastRender(Strict):
    """``soi_mini.render: fast``: reuse and cheaper noise for scale tests (docs/soi_mini.md §7)."""

    backgrounds_per_layout: PosInt = 4  # pre-rendered grounds per layout kind, reused per process
    noise_tiles: PosInt = 2  # noise fields of twice the frame per process; images crop them
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = 1  # zlib level (full: Pillow's 6)


class DatasetSpec(Strict):
    """How many images of each split, which classes, how many objects per image."""

    splits: dict[Split, NonNegInt]
    classes: list[str]
    image_size: ImageSize
    objects_per_image: Range = Range(lo=1, hi=6)


class SoiMini(Strict):
    """SOI-mini, the embedded default dataset, generated in the three real on-disk formats."""

    sardet: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 8, "test": 40},
        classes=list(DATASETS["sardet"].class_names),
        image_size=ImageSize(width=256, height=256),
    )
    dota: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 40},
        classes=["small-vehicle", "large-vehicle", "plane", "ship", "storage-tank", "harbor"],
        image_size=ImageSize(width=256, height=256),
        objects_per_image=Range(lo=2, hi=12),
    )
    dronevehicle: DatasetSpec = DatasetSpec(
        splits={"train": 48, "val": 8, "test": 40},
        classes=list(DATASETS["dronevehicle"].class_names),
        image_size=ImageSize(width=640, height=512),  # the real IR frame (840 x 712 with border)
        objects_per_image=Range(lo=3, hi=20),
    )
    sar: SarSensor = SarSensor()
    ir: IrSensor = IrSensor()
    rgb: RgbSensor = RgbSensor()
    layout: SceneLayout = SceneLayout()
    # full: every image rendered from scratch (the default dataset); fast: scale tests, same
    # formats and label statistics at a multiple of the speed (docs/soi_mini.md §7)
    render: Literal["full", "fast"] = "full"
    fast: FastRender = FastRender()

    @model_validator(mode="after")
    def _known_classes(self) -> SoiMini:
        for name in DATASET_NAMES:
            spec: DatasetSpec = getattr(self, name)
            allowed = DATASETS[name].class_names
            bad = [c for c in spec.classes if c not in allowed]
            if bad:
                raise ValueError(f"{name}.classes: unknown {bad}; allowed: {', '.join(allowed)}")
            if not spec.classes:
                raise ValueError(f"{name}.classes: must not be empty")
        return self


class Importers(Strict):
    """Importer options for the real formats."""

    dronevehicle_modalities: list[Literal["ir", "rgb"]] = ["ir"]
    dronevehicle_border_px: NonNegInt = 100
    min_box_size_px: PosFloat = 1.0


class Preview(Strict):
    """The sample mosaic written by ``babelrs data preview``."""

    per_modality: PosInt = 4
    tile_px: PosInt = 256
    split: Split = "train"


class Model(Strict):
    """Encoder choice shared by pretraining and fine-tuning."""

    encoder: EncoderName = "efficientnet_lite0"


class Lvsa(Strict):
    """Layerwise Visual-Semantic Annealing (docs/method.md §2, docs/pretraining.md)."""

    mode: Literal["last", "lvsa", "concat", "sum"] = "lvsa"
    # Hidden-state indices: 0 = stem / patch embedding, k = output of block k (1-based), negative
    # values count from the end (-1 = last block). null: the encoder's default taps.
    layers: list[int] | None = [5, 11, 16]
    tau: NonNegInt = 45  # optimizer steps until alpha(t) = min(t / tau, 1) reaches 1
    grid: PosInt = 16  # CNN taps are resized to grid x grid before blending
    width: PosInt | None = None  # common width of CNN taps (1x1 conv); null: last tap's width


class PretrainFreeze(Strict):
    """Freeze switches per part (frozen parts get no gradient and no optimizer state)."""

    encoder: bool = False
    projector: bool = False  # tap adapters + the shared projector
    lm_embeddings: bool = False  # token embeddings (tied to the LM output matrix)
    lm_layers: NonNegInt = 0  # bottom N transformer layers of the language model
    lm_head: bool = False  # LM head (BERT's prediction transform is freshly initialised)


class TaskWeights(Strict):
    """Sampling weight of each CSIA instruction task (0 disables a task)."""

    region: NonNegFloat = 0.7
    count: NonNegFloat = 0.075
    presence: NonNegFloat = 0.075
    listing: NonNegFloat = 0.075
    caption: NonNegFloat = 0.075


class TinyLm(Strict):
    """Random small BERT decoder with the real MiniLM vocabulary (``language_model: tiny``)."""

    hidden_size: PosInt = 64
    layers: PosInt = 2
    heads: PosInt = 2
    intermediate_size: PosInt = 128


class Pretrain(Strict):
    """CSIA + LVSA pretraining of the shared vision encoder (docs/pretraining.md)."""

    # language: CSIA (encoder -> projector -> language model); classification: the no-language
    # control, the same encoder on the same region labels through RoI-align + a linear classifier
    objective: Literal["language", "classification"] = "language"
    language_model: str = "minilm"  # minilm | tiny | a local Hugging Face causal-LM directory
    encoder_weights: Path | None = None  # local safetensors for vit_*; null: lite0's ImageNet
    pretrained: bool = True  # load the encoder's pretrained weights (ImageNet for lite0)
    lm_dropout: Fraction | None = None  # language-model dropout; null: the model's own (0.1)
    bn: Literal["frozen", "train"] = "frozen"  # CNN BatchNorm statistics
    image_size: PosInt = 256
    steps: PosInt = 150  # paper: 20k
    batch_size: PosInt = 8  # global: split over the distributed processes
    lr: PosFloat = 1e-3
    lr_scale_encoder: NonNegFloat = 0.2
    lr_scale_lm: NonNegFloat = 0.2
    warmup_steps: NonNegInt = 15  # linear warmup, then cosine
    min_lr_ratio: Fraction = 0.0
    weight_decay: NonNegFloat = 0.01
    clip_grad_norm: PosFloat = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: NonNegInt = 0  # torch CPU threads; 0: torch's default
    projector_hidden: PosInt | None = None  # null: the language model's width
    pixel_shuffle: PosInt = 4  # merge s x s visual cells into one token (InternVL uses 2)
    region_token: bool = True  # region prompts also get RoI-feature and box-size tokens
    hflip: Fraction = 0.5  # training images flipped left-right (boxes in prompts follow)
    vflip: Fraction = 0.5  # training images flipped top-bottom
    region_prefix_dropout: Fraction = 0.0  # region prompts: P(image tokens hidden) in training
    region_roi_dropout: Fraction = 0.0  # region prompts: P(RoI feature hidden, box size kept)
    max_prompt_tokens: PosInt = 96
    max_answer_tokens: PosInt = 32
    max_new_tokens: PosInt = 12  # greedy decoding at evaluation (captions: max_answer_tokens)
    holdout_fraction: Fraction = 0.15  # train images whose prompts are held out for evaluation
    eval_splits: list[Split] = ["val"]  # further held-out images (never trained on)
    eval_max_per_task: PosInt = 80  # held-out prompts per modality and task
    checkpoint_every: PosInt = 100
    log_every: PosInt = 10  # steps between MLflow step metrics (metrics.jsonl has every step)
    tasks: TaskWeights = TaskWeights()
    freeze: PretrainFreeze = PretrainFreeze()
    lvsa: Lvsa = Lvsa()
    tiny_lm: TinyLm = TinyLm()


# -- detector fine-tuning and evaluation (docs/detector.md) ----------------------------------------

HeadType = Literal["gfl", "retinanet", "fcos", "atss", "oriented_rcnn"]
#: head types per box type (docs/detector.md; builders in babelrs_core/detector/heads.py)
HEAD_TYPES_BY_BOX = {
    "hbox": ("gfl", "retinanet", "fcos", "atss"),
    "obox": ("retinanet", "atss", "oriented_rcnn"),
}


class DetHead(Strict):
    """One dataset's detection head (docs/method.md §3.3); heads are keyed by dataset name."""

    type: HeadType = "gfl"  # see HEAD_TYPES_BY_BOX: which types each box_type offers
    box_type: Literal["hbox", "obox"] = "hbox"  # obox: mmrotate RotatedBoxes (le90), rotated AP
    loss_weight: NonNegFloat = 1.0  # this head's losses are multiplied by it before summing
    stacked_convs: PosInt = 2  # conv tower depth (paper: 4)
    feat_channels: PosInt = 64  # conv tower width (paper: 256)
    anchor_scale: PosInt = 4  # octave_base_scale of anchor heads (anchor side = scale x stride;
    # paper: 8; SOI-mini objects are small)
    # rotated ATSS box loss on decoded boxes (Gaussian, CPU-only ops): kld = mmrotate's
    # KL(target || pred); rkld = KL(pred || target); gwd = Gaussian Wasserstein; mrl1 = modulated
    # L1 on target-normalised offsets (docs/detector.md)
    box_loss: Literal["kld", "rkld", "gwd", "mrl1"] = "kld"
    score_thr: Fraction = 0.05  # test: drop detections below this score
    nms_pre: PosInt = 1000  # test: best candidates per FPN level kept before NMS
    nms_iou: Fraction = 0.6  # test: NMS IoU threshold
    max_per_img: PosInt = 100  # test: detections kept per image

    @model_validator(mode="after")
    def _known_head(self) -> DetHead:
        allowed = HEAD_TYPES_BY_BOX[self.box_type]
        if self.type not in allowed:
            raise ValueError(
                f"type {self.type!r} has no {self.box_type} head; {self.box_type} heads: "
                + ", ".join(allowed)
            )
        return self


class DetModality(Strict):
    """Input size, augmentation and normalisation of one sensor."""

    image_size: PosInt = 256  # long side after a keep-ratio resize (then padded to 32)
    crop: PosInt | None = None  # training only: random crop x crop window after the resize
    hflip: Fraction = 0.5  # probability of a horizontal flip
    vflip: Fraction = 0.0  # probability of a vertical flip
    rot90: Fraction = 0.0  # probability of a random 90/180/270 degree rotation
    rotate: Fraction = 0.0  # probability of a free rotation (obox heads only; see docs/detector.md)
    rotate_range: float = Field(default=180.0, gt=0, le=180)  # rotation angle in [-range, range)
    mean: list[float] | None = None  # 0..255 per channel; null: from finetune.normalization
    std: list[float] | None = None

    @model_validator(mode="after")
    def _stats(self) -> DetModality:
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None and (len(v) != 3 or (key == "std" and min(v) <= 0)):
                raise ValueError(f"{key}: three values (0..255 scale), std > 0")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        return self


def _default_heads() -> dict[DatasetName, DetHead]:
    # DOTA and DroneVehicle: rotated ATSS on CPU (paper: oriented_rcnn, ~3x the CPU cost), scored
    # with rotated AP; rotated NMS has a quadratic CPU kernel, so fewer candidates (nms_pre)
    return {
        "sardet": DetHead(),
        "dota": DetHead(
            type="atss",
            box_type="obox",
            box_loss="mrl1",
            nms_pre=300,
            loss_weight=1.5,  # the reference's DOTA weight
        ),
        "dronevehicle": DetHead(type="atss", box_type="obox", box_loss="mrl1", nms_pre=300),
    }


def _default_modalities() -> dict[Modality, DetModality]:
    return {
        "sar": DetModality(),
        "rgb": DetModality(vflip=0.5, rot90=0.5),
        "ir": DetModality(image_size=640, vflip=0.5, rot90=0.5),
    }


class Finetune(Strict):
    """Shared multi-sensor detector fine-tuning on mmdet / mmengine (docs/detector.md)."""

    init: Literal["csia", "imagenet", "scratch"] = "csia"  # csia: the pretraining output
    encoder_weights: Path | None = None  # imagenet init of vit_*: a local safetensors file
    layers: list[int] | None = None  # encoder taps (hidden-state indices); null: its default
    vit_strides: list[PosInt] = [8, 16, 32]  # ViT simple feature pyramid output strides
    bn: Literal["frozen", "train"] = "frozen"  # CNN BatchNorm statistics
    frozen_layers: int = 5  # encoder hidden states 0..N get no gradient (0 = stem); -1: none
    channels_last: bool = True  # CNN encoders: NHWC activations (faster depthwise convs on CPU)
    neck_channels: PosInt = 64  # shared FPN width (paper: 256)
    neck_outs: PosInt = 5  # FPN levels from the first tap's stride (5: P3-P7 for lite0)
    heads: dict[DatasetName, DetHead] = Field(default_factory=_default_heads)
    source_ratio: dict[DatasetName, PosInt] = {"sardet": 2, "dota": 1, "dronevehicle": 1}
    batch_size: PosInt = 4  # global images per step, split by source_ratio (paper: 4 per GPU)
    iters: PosInt = 900  # optimizer steps (paper: 33,468)
    lr: PosFloat = 1e-3  # AdamW (paper: 5e-5 for ViT-L at batch 32)
    weight_decay: NonNegFloat = 0.05
    layer_decay: Fraction = 1.0  # layer-wise lr decay of the encoder (paper: 0.95); 1 = off
    encoder_lr_scale: NonNegFloat = 0.5  # extra lr factor for every encoder parameter
    warmup_iters: NonNegInt = 30  # linear warmup from warmup_ratio x lr (paper: 500 from 1/3)
    warmup_ratio: Fraction = 0.333
    lr_schedule: Literal["step", "cosine"] = "cosine"  # after warmup: step decay | cosine annealing
    lr_steps: list[Fraction] = [0.667, 0.917]  # step decay points as fractions of iters
    lr_gamma: Fraction = 0.1
    min_lr_ratio: Fraction = 0.0  # cosine: final lr as a fraction of lr
    clip_grad_norm: PosFloat | None = 35.0  # max L2 norm (paper: 35); null: no clipping
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16: AMP with dynamic loss scaling
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: NonNegInt = 0  # torch CPU threads; 0: torch's default
    normalization: Literal["auto", "encoder", "data", "imagenet"] = "auto"
    modalities: dict[Modality, DetModality] = Field(default_factory=_default_modalities)
    log_every: PosInt = 10  # iterations between metrics.jsonl lines
    grad_cosine_every: NonNegInt = 100  # iterations between per-modality gradient cosines; 0 off
    val_every: NonNegInt = 225  # iterations between validation scores (validation.csv); 0 off
    val_split: str = "val"  # split scored during training (every trained dataset needs it)
    val_max_images: PosInt = 16  # first N images of each dataset's validation split
    checkpoint_every: PosInt = 225  # iterations between mmengine checkpoints
    keep_checkpoints: PosInt = 2
    # training images kept per dataset: a seeded, nested subset (round to nearest, at least 1);
    # datasets not named keep all (babelrs_core/detector/data.py: label_subset)
    label_fraction: dict[DatasetName, Annotated[float, Field(gt=0, le=1)]] = {
        "sardet": 1.0,
        "dota": 1.0,
        "dronevehicle": 1.0,
    }

    @model_validator(mode="after")
    def _consistent(self) -> Finetune:
        if set(self.source_ratio) != set(self.heads):
            raise ValueError(
                f"source_ratio keys {sorted(self.source_ratio)} must equal heads keys "
                f"{sorted(self.heads)}"
            )
        total = sum(self.source_ratio.values())
        if self.batch_size % total:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of the source_ratio sum {total}"
            )
        if self.lr_steps != sorted(self.lr_steps):
            raise ValueError(f"lr_steps must be increasing, got {self.lr_steps}")
        needed = {DATASETS[d].modality for d in self.heads}
        missing = sorted(needed - set(self.modalities))
        if missing:
            raise ValueError(f"modalities: missing {missing} (needed by the heads)")
        return self


# -- the ablation (docs/ablation.md) ---------------------------------------------------------------

ABLATION_FIXED = (
    "init",
    "precision",
    "iters",
    "threads",
    "device",
    "log_every",
    "grad_cosine_every",
    "label_fraction",
)


class AblationVariant(Strict):
    """One encoder start of the ablation: ``init`` plus overrides of its pretraining / fine-tuning.

    ``pretrain`` and ``finetune`` hold dotted keys relative to those sections (``lvsa.mode: last``).
    """

    label: str = Field(min_length=1)
    init: Literal["csia", "imagenet", "scratch"]
    pretrain: dict[str, Any] = {}  # csia only: how its encoder is pretrained differs
    finetune: dict[str, Any] = {}  # the same for every seed and precision of this variant

    @model_validator(mode="after")
    def _overrides(self) -> AblationVariant:
        if self.pretrain and self.init != "csia":
            raise ValueError(f"pretrain overrides need init csia (init is {self.init})")
        fixed = sorted(k for k in self.finetune if k.split(".")[0] in ABLATION_FIXED)
        if fixed:
            raise ValueError(
                f"finetune overrides {fixed}: set by the ablation plan itself (init, precision, "
                "iters: equal compute for every variant)"
            )
        return self


def _default_variants() -> dict[str, AblationVariant]:
    return {
        "ours": AblationVariant(label="CSIA + LVSA (ours)", init="csia"),
        "last_layer": AblationVariant(
            label="CSIA, last layer only", init="csia", pretrain={"lvsa.mode": "last"}
        ),
        "tau0": AblationVariant(label="CSIA, tau = 0", init="csia", pretrain={"lvsa.tau": 0}),
        "imagenet": AblationVariant(label="ImageNet (late alignment)", init="imagenet"),
        "scratch": AblationVariant(label="scratch", init="scratch"),
        "no_language": AblationVariant(
            label="same labels, no language",
            init="csia",
            pretrain={"objective": "classification"},
        ),
    }


class ComputeControl(Strict):
    """A start without pretraining fine-tuned longer by what a pretraining cost (equal total
    compute): ``variant``'s fine-tuning + as many iterations as ``pretrain_of``'s pretraining time
    buys at ``variant``'s measured time per iteration (babelrs_core/ablation/compute.py)."""

    label: str = Field(min_length=1)
    variant: str  # the start fine-tuned longer (init imagenet or scratch)
    pretrain_of: str  # the csia variant whose pretraining time is spent


def _default_compute_controls() -> dict[str, ComputeControl]:
    return {
        "imagenet_long": ComputeControl(
            label="ImageNet, + pretraining compute", variant="imagenet", pretrain_of="ours"
        )
    }


#: ablation keys a study may not replace
_STUDY_FIXED = frozenset({"study", "studies"})


def _previous_recipe() -> dict[str, Any]:
    return {
        "label": "previous recipe (128 px, LM partly frozen)",
        "init": "csia",
        "pretrain": {"image_size": 128, "freeze.lm_embeddings": True, "freeze.lm_layers": 4},
    }


def _default_studies() -> dict[str, dict[str, Any]]:
    ours = {"label": "CSIA + LVSA (ours)", "init": "csia"}
    return {
        "recipe": {
            "section": "Ablation: pretraining recipe",
            "plots_dir": "docs/img/ablation/recipe",
            "precisions": ["fp32"],
            "expected_order": ["ours"],
            "compute_controls": {},
            "label_variants": [],
            "variants": {
                "ours": ours,
                "pretrain_128": {
                    "label": "CSIA at 128 px",
                    "init": "csia",
                    "pretrain": {"image_size": 128},
                },
                "lm_frozen": {
                    "label": "CSIA, LM embeddings + 4 layers frozen",
                    "init": "csia",
                    "pretrain": {"freeze.lm_embeddings": True, "freeze.lm_layers": 4},
                },
                "previous": _previous_recipe(),
            },
        },
        "recipe_long": {
            "section": "Ablation: pretraining recipe at 900 iterations",
            "out_root": "outputs/ablation_long",
            "plots_dir": "docs/img/ablation/recipe_long",
            "iters": 900,
            "precisions": ["fp32"],
            "expected_order": ["ours"],
            "compute_controls": {},
            "label_variants": [],
            "variants": {"ours": ours, "previous": _previous_recipe()},
        },
    }


class Ablation(Strict):
    """``babelrs ablation run``: encoder starts x precisions x seeds, equal fine-tuning compute.

    ``study`` names one of ``studies``, whose keys then replace these (``babelrs ablation run
    --study NAME``): the same machinery over other variants, reported in a section of its own.
    """

    variants: dict[str, AblationVariant] = Field(default_factory=_default_variants)
    expected_order: list[str] = ["ours", "last_layer", "tau0", "imagenet", "scratch"]
    precisions: list[Literal["fp32", "bf16", "fp16"]] = ["fp32", "fp16"]
    seeds: list[NonNegInt] = [0, 1, 2]  # fine-tuning seeds (at least two: a spread needs two)
    iters: PosInt = 200  # fine-tuning iterations of every run (equal compute)
    # the ablation's own SOI-mini (out_root/data): each dataset's evaluation split
    # (evaluation.splits) grown to at least this many images, the other splits image for image
    # the pipeline's; 0: the pipeline's data as it is
    eval_images: NonNegInt = 64
    pretrain_seed: NonNegInt | None = None  # seed of every pretraining; null: the top-level seed
    pretrain_eval_max_per_task: PosInt = 16  # held-out prompts in the pretraining evaluation
    cpu_fp16: Literal["full", "probe", "skip"] = "probe"  # fp16 autocast on a CPU device
    probe_iters: PosInt = 5  # iterations of a cpu_fp16 probe run (not evaluated)
    log_every: PosInt = 1  # metrics.jsonl lines: 1 = every iteration (exact first non-finite)
    grad_cosine_every: PosInt = 20  # per-modality gradient cosines every N iterations
    workers: PosInt = 2  # runs at once (separate processes)
    threads: NonNegInt = 1  # torch threads per run; 0: torch's default
    spread: Literal["half_range", "std"] = "half_range"  # over seeds: (max - min) / 2 or std
    order_metric: Literal["hmap", "map", "ap50"] = "hmap"  # overall score the ordering uses
    bootstrap_samples: PosInt = 1000  # paired bootstrap over evaluation images: resamples
    bootstrap_seed: NonNegInt = 0  # seed of the resampled image indices
    out_root: Path = Path("outputs/ablation")
    results_md: Path = Path("docs/results.md")
    plots_dir: Path = Path("docs/img/ablation")  # PNGs linked from results_md
    compute_controls: dict[str, ComputeControl] = Field(default_factory=_default_compute_controls)
    # label efficiency: label_dataset's head trained on these fractions of its training images
    # (the others in full), for label_variants; fraction 1.0 is the variants' own runs
    label_dataset: DatasetName = "dronevehicle"
    label_fractions: list[Annotated[float, Field(gt=0, le=1)]] = [0.1, 0.25, 1.0]
    label_variants: list[str] = ["ours", "no_language", "imagenet"]
    label_seeds: PosInt = 2  # the first N of seeds run (and are scored) at every label fraction
    section: str = Field(default="Ablation", min_length=1)  # heading (## ...) in results_md
    study: str | None = None  # a name of studies, applied over these keys; None: the ablation
    studies: dict[str, dict[str, Any]] = Field(default_factory=_default_studies)

    @property
    def label_run_seeds(self) -> list[int]:
        """The seeds every label fraction runs and is scored with: the first ``label_seeds``."""
        return self.seeds[: self.label_seeds]

    @property
    def report_dir(self) -> Path:
        """Where the run record and ``summary.json`` go: ``out_root``, or
        ``out_root/studies/<study>`` (a study shares the runs and the data, not the report)."""
        return self.out_root if self.study is None else self.out_root / "studies" / self.study

    def with_study(self, name: str) -> Ablation:
        """These settings with study ``name``'s keys in place (validated)."""
        return Ablation.model_validate(
            {**self.model_dump(mode="json", exclude={"study"}), "study": name}
        )

    @model_validator(mode="before")
    @classmethod
    def _apply_study(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("study") is None:
            return data
        name, studies = data["study"], data.get("studies", _default_studies())
        if name not in studies:
            known = ", ".join(sorted(studies)) or "none"
            raise ValueError(f"study {name!r}: not one of ablation.studies ({known})")
        return {**data, **studies[name]}

    @model_validator(mode="after")
    def _studies(self) -> Ablation:
        for name, keys in self.studies.items():
            bad = sorted((set(keys) - set(type(self).model_fields)) | (set(keys) & _STUDY_FIXED))
            if bad:
                raise ValueError(f"studies.{name}: keys {bad} are not ablation settings it sets")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Ablation:
        bad = [n for n in self.variants if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", n)]
        if bad:
            raise ValueError(f"variants {bad}: names are lower-case letters, digits, _ and -")
        if not self.variants:
            raise ValueError("variants: at least one")
        unknown = [n for n in self.expected_order if n not in self.variants]
        if unknown:
            raise ValueError(f"expected_order: unknown variants {unknown}")
        if len(set(self.expected_order)) != len(self.expected_order):
            raise ValueError("expected_order: a variant appears twice")
        if len(set(self.seeds)) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds}: at least two distinct seeds (mean +- spread)")
        if not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"precisions {self.precisions}: one or more, each once")
        unknown = [n for n in self.label_variants if n not in self.variants]
        if unknown:
            raise ValueError(f"label_variants: unknown variants {unknown}")
        if self.label_seeds > len(self.seeds):
            raise ValueError(f"label_seeds {self.label_seeds}: at most the {len(self.seeds)} seeds")
        if len(set(self.label_fractions)) != len(self.label_fractions):
            raise ValueError(f"label_fractions {self.label_fractions}: each once")
        for name, c in self.compute_controls.items():
            if name in self.variants or not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name):
                raise ValueError(f"compute_controls.{name}: a new name (lower-case, digits, _ -)")
            base, pre = self.variants.get(c.variant), self.variants.get(c.pretrain_of)
            if base is None or base.init == "csia":
                raise ValueError(
                    f"compute_controls.{name}.variant {c.variant!r}: a variant without "
                    "pretraining (init imagenet or scratch)"
                )
            if pre is None or pre.init != "csia":
                raise ValueError(
                    f"compute_controls.{name}.pretrain_of {c.pretrain_of!r}: a csia variant"
                )
        return self


class Evaluation(Strict):
    """SOI-Det evaluation of the fine-tuned detector (docs/method.md §4.2)."""

    splits: dict[DatasetName, Split] = {"sardet": "test", "dota": "val", "dronevehicle": "test"}
    ignore_difficult: bool = True  # DOTA difficult objects neither count nor penalise
    max_dets: PosInt = 100  # COCO maxDets for AP
    batch_size: PosInt = 4
    samples_per_modality: NonNegInt = 4  # images drawn with predictions per modality
    draw_score_thr: Fraction = 0.3  # predictions drawn on the sample images


class Validation(Strict):
    """The data validation stage (docs/data.md): GX suites over the manifest and checks
    of every image file, run before anything trains on the data."""

    out_dir: Path = Path("outputs/validation")  # report.json, report.md, summary.json (metrics)
    data_docs_dir: Path = Path("outputs/validation/data_docs")  # GX Data Docs HTML (CDN styling)
    data_docs: bool = True  # write the Data Docs HTML (the JSON/markdown report is always written)
    max_examples: PosInt = 20  # offending rows / files listed per failed check
    image_checks: bool = True  # decode every image: exists, decodes, size, channels, dtype, std
    min_std: NonNegFloat = 1.0  # pixel std (cropped window) at or below this: "constant image"
    channels: dict[Modality, list[Annotated[int, Field(ge=1, le=4)]]] = {
        "sar": [1, 3],
        "rgb": [3],
        "ir": [1, 3],
    }
    dtypes: dict[Modality, list[Literal["uint8", "uint16", "int32", "float32"]]] = {
        "sar": ["uint8"],
        "rgb": ["uint8"],
        "ir": ["uint8"],
    }
    required_splits: list[Split] = ["train", "val"]  # each dataset needs images + objects in these
    # Classes that must have >= 1 train object: the classes seen in any split of the manifest
    # (observed), plus soi_mini.<dataset>.classes (soi_mini) or the whole label space (label_space).
    train_classes: Literal["observed", "soi_mini", "label_space"] = "soi_mini"
    workers: PosInt = 2  # threads decoding images


class Shards(Strict):
    """Content-addressed tar shards of the manifest's images (docs/data.md, "Shards")."""

    target_mb: PosFloat = 64.0  # mean shard size aimed at (sizes vary, see docs/data.md)
    dir: Path = Path("data/shards/soi_mini")  # <dataset>-<split>-<sha256[:16]>.tar + the index
    index: Path = Path("data/shards/soi_mini/index.parquet")  # image_id -> shard, offset, size


class Tracking(Strict):
    """MLflow tracking (babelrs_core/tracking.py). ``MLFLOW_TRACKING_URI`` overrides ``store``."""

    experiment: str = "babelrs"
    store: Path = Path("outputs/mlflow")  # local SQLite store + artifacts when no server is set
    flush_every: PosInt = 200  # step metrics buffered per log_batch call


class Registry(Strict):
    """MLflow model registry and the promotion gate (docs/registry.md). Scores are in percent
    points, as in ``metrics/eval.json``."""

    model_name: str = Field(
        default="babelrs-detector", min_length=1, pattern=r"^[A-Za-z0-9][\w.\-]*$"
    )
    margin: NonNegFloat = 1.0  # challenger H-mAP must beat the champion's by at least this
    max_drop: NonNegFloat = 5.0  # no dataset's mAP may fall by more than this (delta)
    floor: NonNegFloat = 20.0  # the first champion needs at least this H-mAP
    out_dir: Path = Path("outputs/registry")  # registration.json (version, URI, gate decision)
    lock_timeout_s: PosFloat = 300.0  # wait at most this long for another promotion to finish
    lock_stale_s: PosFloat = 900.0  # a promotion lock older than this is broken (crashed holder)


class Orchestration(Strict):
    """Prefect scheduling of the pipeline (prefect.yaml, infra/local/serve_scheduler.sh)."""

    gpu_concurrency: PosInt = 1  # task runs tagged ``gpu`` at once (Prefect tag concurrency limit)
    output_lock_timeout_s: NonNegFloat = 3600.0  # wait for another run writing the same outputs
    # Prefect task timeout per stage (seconds); a stage missing here has none
    stage_timeout_s: dict[str, PosFloat] = {
        "generate": 1800.0,
        "import": 1800.0,
        "validate": 1800.0,
        "shard": 1800.0,
        "pretrain": 21600.0,
        "finetune": 86400.0,
        "evaluate": 7200.0,
        "register": 1800.0,
    }
    # where Prefect keeps task results: null = Prefect's local storage (PREFECT_HOME/storage),
    # "block:<type>/<name>" = a saved storage block (e.g. block:s3-bucket/babelrs-results, for
    # workers on other machines), anything else = a local folder
    result_storage: str | None = None


class Distributed(Strict):
    """``torchrun`` data parallelism of the training stages (babelrs_core/distributed.py).

    Batch sizes in ``pretrain`` / ``finetune`` are global: each of the ``nnodes x nproc_per_node``
    processes takes its share, so changing the process count does not change the optimisation.
    """

    nproc_per_node: PosInt = 1  # processes per machine (one per GPU); 1: plain single process
    nnodes: PosInt = 1  # machines; > 1 needs rdzv_endpoint and the same command on every node
    rdzv_endpoint: str | None = None  # host:port of the rendezvous; null: this machine, free port
    rdzv_id: str = "babelrs"  # rendezvous job id (the same on every node of one run)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on CUDA, gloo on CPU

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @model_validator(mode="after")
    def _endpoint(self) -> Distributed:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint (host:port reachable by every node)")
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"rdzv_endpoint {self.rdzv_endpoint!r}: expected host:port")
        return self


class Images(Strict):
    """How every stage reads pixels (docs/data.md, "Image source")."""

    source: Literal["files", "shards"] = "files"  # loose files (manifest paths) | shards.index
    cache_mb: NonNegFloat = 512.0  # decoded-image LRU cache in all, MB; 0 = off
    loader_workers: NonNegInt = 0  # fine-tuning DataLoader processes; 0 = the training process


class Params(Strict):
    """The whole ``params.yaml``."""

    seed: NonNegInt = 0
    paths: Paths = Paths()
    soi_mini: SoiMini = SoiMini()
    importers: Importers = Importers()
    validation: Validation = Validation()
    shards: Shards = Shards()
    images: Images = Images()
    preview: Preview = Preview()
    model: Model = Model()
    pretrain: Pretrain = Pretrain()
    finetune: Finetune = Finetune()
    evaluation: Evaluation = Evaluation()
    tracking: Tracking = Tracking()
    registry: Registry = Registry()
    orchestration: Orchestration = Orchestration()
    distributed: Distributed = Distributed()
    ablation: Ablation = Ablation()

    @field_validator("*", mode="before")
    @classmethod
    def _no_nan(cls, value: Any, info: ValidationInfo) -> Any:
        _reject_nan(value, info.field_name or "")
        return value

    @model_validator(mode="after")
    def _global_batches(self) -> Params:
        world = self.distributed.world_size
        _require_multiple(
            "pretrain.batch_size",
            self.pretrain.batch_size,
            world,
            f"the number of processes ({world} = distributed.nnodes x nproc_per_node)",
        )
        ratio = sum(self.finetune.source_ratio.values())
        _require_multiple(
            "finetune.batch_size",
            self.finetune.batch_size,
            world * ratio,
            f"processes x source_ratio sum ({world} x {ratio}): every process keeps the ratio",
        )
        return self

    @model_validator(mode="after")
    def _visual_grid(self) -> Params:
        pt = self.pretrain
        if self.model.encoder.startswith("vit"):
            return self  # ViT grids follow image_size / patch; checked when the model is built
        _require_multiple(
            "pretrain.lvsa.grid",
            pt.lvsa.grid,
            pt.pixel_shuffle,
            f"pretrain.pixel_shuffle ({pt.pixel_shuffle})",
        )
        return self

    @model_validator(mode="after")
    def _ablation_variants(self) -> Params:
        _check_variant_overrides(self)
        if self.ablation.study is None:  # every study's settings and overrides are valid too
            for study in self.ablation.studies:
                try:
                    ablation = self.ablation.with_study(study)
                    _check_variant_overrides(self.model_copy(update={"ablation": ablation}))
                except ValidationError as exc:
                    msg = "; ".join(_error_text(e) for e in exc.errors())
                    raise ValueError(f"ablation.studies.{study}: {msg}") from None
                except ValueError as exc:
                    raise ValueError(f"ablation.studies.{study}: {exc}") from None
        return self


def _require_multiple(key: str, value: int, divisor: int, divisor_text: str) -> None:
    """``ValueError`` "``key`` (value) must be a multiple of ``divisor_text``" unless it is."""
    if value % divisor:
        raise ValueError(f"{key} ({value}) must be a multiple of {divisor_text}")


def _check_variant_overrides(params: Params) -> None:
    """Every ablation variant's pretrain / finetune overrides apply (ValueError naming the key)."""
    for name in params.ablation.variants:
        ablation_section(params, name, "pretrain")
        ablation_section(params, name, "finetune")


def ablation_section(params: Params, variant: str, section: str) -> Any:
    """``params.<section>`` (pretrain | finetune) with the ablation variant's overrides applied."""
    base = getattr(params, section)
    overrides = getattr(params.ablation.variants[variant], section)
    if not overrides:
        return base
    data = base.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    try:
        return type(base).model_validate(data)
    except ValidationError as exc:
        where = f"ablation.variants.{variant}.{section}"
        msgs = "; ".join(_error_text(e) for e in exc.errors())
        raise ValueError(f"{where}: {msgs}") from None


def _error_text(error: Any) -> str:
    """``loc: message`` of one pydantic error (``unknown key`` for a forbidden extra key)."""
    loc = ".".join(str(p) for p in error["loc"])
    msg = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _reject_nan(value: Any, key: str = "") -> None:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ValueError(f"{key or 'value'} must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_nan(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_nan(v, f"{key}[{i}]")


class ConfigError(BadInputError):
    """``params.yaml`` is missing, unreadable or invalid; the message names file, key and rule."""


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} invalid value(s)"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml's documented keys)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a params mapping; raise :class:`ConfigError` with every problem listed."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_params(
    path: str | os.PathLike[str] = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
) -> Params:
    """Load, override (dotted keys, e.g. ``{"soi_mini.sardet.splits.train": 8}``) and validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return parse_params(data, str(path))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key == "a.b"``, creating mappings on the way."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a nested mapping (leaves that are not mappings kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_dict(value, dotted))
        else:
            out[dotted] = value
    return out


def flatten(params: Params) -> dict[str, Any]:
    """Dotted-key view of the params (for tracking)."""
    return flatten_dict(params.model_dump(mode="json"))
