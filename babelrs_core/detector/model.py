"""The shared multi-sensor detector: one backbone, one FPN, one head per dataset (mmdet 3.x).

:class:`MultiHeadDetector` is an mmdet ``BaseDetector``. The mixed-sensor batch goes through the
shared backbone and FPN (once per group of images of the same padded size, so that square SAR / RGB
images do not pay for IR's wider padding); the features are then split by each image's
``dataset`` (a data-sample metainfo key) and every head sees only its own dataset's images. Head
losses are scaled by the per-head weight and summed (docs/method.md §3.4:
Loss_total = Σ_n w_n Loss_n), and are logged as ``{dataset}.{loss name}`` plus ``{dataset}.loss``
per head.

When :attr:`MultiHeadDetector.measure_grad_cosine` is set (by
:class:`~babelrs_core.detector.hooks.GradCosineHook` every K iterations), ``train_step`` also takes
the gradient of each head's loss with respect to the shared encoder (and FPN) parameters and logs
the pairwise cosines: the paper's gradient-conflict argument (docs/method.md §5.2), measured.

:class:`ModalityDataPreprocessor` normalises each image with its own modality's mean / std before
padding, so per-sensor statistics live in the model config (and in every exported checkpoint).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.model import ModuleDict
from mmengine.structures import InstanceData
from torch import nn

from babelrs_core.concepts import DATASETS


@MODELS.register_module()
class ModalityDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` with one mean / std per modality (data-sample key ``modality``).

    ``norm`` maps a modality to ``{"mean": [3], "std": [3]}`` on the 0..255 scale. Images are
    normalised one by one, then padded with 0 (= the mean) to ``pad_size_divisor``.

    Ground-truth boxes: ``HorizontalBoxes`` become plain tensors (what mmdet's dense heads expect),
    mmrotate ``RotatedBoxes`` stay box objects (what the rotated coders need; mmrotate configs set
    ``boxtype2tensor=False`` for the same reason), so both kinds of heads share one preprocessor.
    ``boxtype2tensor=True`` (older checkpoints) converts every box type.
    """

    def __init__(self, norm: dict[str, dict[str, Sequence[float]]], **kwargs: Any) -> None:
        kwargs.pop("mean", None)
        kwargs.pop("std", None)
        super().__init__(mean=None, std=None, **kwargs)
        self.norm = {m: {k: list(v) for k, v in s.items()} for m, s in norm.items()}
        for mod, stats in self.norm.items():
            self.register_buffer(f"mean_{mod}", torch.tensor(stats["mean"]).view(3, 1, 1), False)
            self.register_buffer(f"std_{mod}", torch.tensor(stats["std"]).view(3, 1, 1), False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        samples = data.get("data_samples")
        if samples is None:
            raise ValueError("ModalityDataPreprocessor needs data_samples with a 'modality' key")
        inputs = []
        for img, sample in zip(data["inputs"], samples, strict=True):
            mod = sample.metainfo.get("modality")
            if mod not in self.norm:
                raise ValueError(
                    f"image {sample.metainfo.get('img_id')}: modality {mod!r} has no "
                    f"normalisation statistics (known: {', '.join(self.norm)})"
                )
            mean, std = getattr(self, f"mean_{mod}"), getattr(self, f"std_{mod}")
            inputs.append((img.float() - mean) / std)
        data = {**data, "inputs": inputs}
        out = super().forward(data, training)
        if not self.boxtype2tensor:
            for sample in out.get("data_samples") or []:
                for key in ("gt_instances", "ignored_instances"):
                    inst = sample.get(key)
                    if inst is not None and isinstance(inst.get("bboxes"), HorizontalBoxes):
                        inst.bboxes = inst.bboxes.tensor
        return out


def _rotated_gt(samples: Sequence[Any]) -> None:
    """Oriented ground truth that arrives as plain ``(n, 5)`` tensors (mmdet's
    ``add_pred_to_datasample`` turns every box of a sample into a tensor, in place) becomes
    ``RotatedBoxes`` again: mmrotate's coders need the box type."""
    for sample in samples:
        for key in ("gt_instances", "ignored_instances"):
            inst = sample.get(key)
            boxes = inst.get("bboxes") if inst is not None else None
            if isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[-1] == 5:
                from mmrotate.structures.bbox import RotatedBoxes

                inst.bboxes = RotatedBoxes(boxes)


def _split(feats: Sequence[torch.Tensor], idx: list[int], n: int) -> tuple[torch.Tensor, ...]:
    if len(idx) == n:
        return tuple(feats)
    index = torch.as_tensor(idx, device=feats[0].device)
    return tuple(f.index_select(0, index) for f in feats)


@MODELS.register_module()
class MultiHeadDetector(BaseDetector):
    """Shared backbone + shared neck + ``heads[dataset]``; routing by data-sample ``dataset``."""

    def __init__(
        self,
        backbone: dict,
        neck: dict,
        heads: dict[str, dict],
        loss_weights: dict[str, float] | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        unknown = sorted(set(heads) - set(DATASETS))
        if unknown:
            raise KeyError(f"heads for unknown datasets {unknown}; known: {', '.join(DATASETS)}")
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        # mmengine's ModuleDict (a BaseModule): init_weights reaches every head's init_cfg
        self.heads = ModuleDict({name: MODELS.build(cfg) for name, cfg in heads.items()})
        self.loss_weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in heads}
        self.measure_grad_cosine = False

    # -- features and routing ---------------------------------------------------------------------

    def extract_feat(self, batch_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(batch_inputs)))

    def _groups(self, samples: Sequence[Any]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            name = s.metainfo.get("dataset")
            if name not in self.heads:
                raise ValueError(
                    f"image {s.metainfo.get('img_id')}: dataset {name!r} has no head "
                    f"(heads: {', '.join(self.heads)})"
                )
            groups.setdefault(name, []).append(i)
        return groups

    def _shape_groups(
        self, batch_inputs: torch.Tensor, samples: Sequence[Any]
    ) -> list[tuple[list[int], tuple[torch.Tensor, ...]]]:
        """Features per group of images with the same padded size, each group cropped to its size.

        A mixed batch is padded to its largest image (IR 256 x 320 next to square SAR / RGB);
        running the shared parts once per size group skips that padding (~15 % of the compute of
        a 2:1:1 batch) and gives every image the features it gets alone at inference.
        """
        div = int(getattr(self.data_preprocessor, "pad_size_divisor", 1)) or 1
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(samples):
            h, w = s.metainfo.get("img_shape", batch_inputs.shape[-2:])[:2]
            key = (
                min(-(-int(h) // div) * div, batch_inputs.shape[-2]),
                min(-(-int(w) // div) * div, batch_inputs.shape[-1]),
            )
            groups.setdefault(key, []).append(i)
        if len(groups) == 1:
            return [(list(range(len(samples))), self.extract_feat(batch_inputs))]
        out = []
        for (h, w), idx in groups.items():
            index = torch.as_tensor(idx, device=batch_inputs.device)
            x = batch_inputs.index_select(0, index)[..., :h, :w]
            for i in idx:
                samples[i].set_metainfo({"batch_input_shape": (h, w)})
            out.append((idx, self.extract_feat(x)))
        return out

    def _routes(
        self, batch_inputs: torch.Tensor, samples: Sequence[Any]
    ) -> list[tuple[str, list[int], tuple[torch.Tensor, ...]]]:
        """(dataset, sample indices, their features) for every dataset x size group."""
        datasets = self._groups(samples)  # validates the dataset names
        owner = {i: name for name, idx in datasets.items() for i in idx}
        routes = []
        for idx, feats in self._shape_groups(batch_inputs, samples):
            by_ds: dict[str, list[int]] = {}
            for pos, i in enumerate(idx):
                by_ds.setdefault(owner[i], []).append(pos)
            for name, positions in by_ds.items():
                routes.append(
                    (name, [idx[p] for p in positions], _split(feats, positions, len(idx)))
                )
        return routes

    # -- mmdet API --------------------------------------------------------------------------------

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples: list) -> dict:
        _rotated_gt(batch_data_samples)
        counts = {name: len(idx) for name, idx in self._groups(batch_data_samples).items()}
        losses: dict[str, Any] = {}
        for name, idx, feats in self._routes(batch_inputs, batch_data_samples):
            head_losses = self.heads[name].loss(feats, [batch_data_samples[i] for i in idx])
            # weight w of the head; a dataset split over size groups averages by image share
            w = self.loss_weights[name] * len(idx) / counts[name]
            for key, value in head_losses.items():
                scale = w if "loss" in key else len(idx) / counts[name]
                if isinstance(value, list | tuple):
                    value = [v * scale for v in value]
                elif isinstance(value, torch.Tensor):
                    value = value * scale
                full = f"{name}.{key}"
                if full not in losses:
                    losses[full] = value
                elif isinstance(value, list):
                    losses[full] = [a + b for a, b in zip(losses[full], value, strict=True)]
                else:
                    losses[full] = losses[full] + value
        return losses

    def predict(
        self, batch_inputs: torch.Tensor, batch_data_samples: list, rescale: bool = True
    ) -> list:
        results: list[InstanceData | None] = [None] * len(batch_data_samples)
        for name, idx, feats in self._routes(batch_inputs, batch_data_samples):
            out = self.heads[name].predict(
                feats, [batch_data_samples[i] for i in idx], rescale=rescale
            )
            for i, r in zip(idx, out, strict=True):
                results[i] = r
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs: torch.Tensor, batch_data_samples: list | None = None) -> dict:
        feats = self.extract_feat(batch_inputs)
        return {name: head.forward(feats) for name, head in self.heads.items()}

    # -- training step: per-head totals and gradient cosines ---------------------------------------

    def parse_losses(self, losses: dict) -> tuple[torch.Tensor, dict]:
        loss, log_vars = super().parse_losses(losses)
        per_head: dict[str, torch.Tensor] = {}
        for key, value in log_vars.items():
            head, _, rest = key.partition(".")
            if rest and "loss" in rest:
                per_head[head] = per_head.get(head, 0) + value.detach()
        out = OrderedDict([("loss", log_vars.pop("loss"))])
        out.update((f"{h}.loss", v) for h, v in per_head.items())
        out.update(log_vars)
        return loss, out

    def shared_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters every head's gradient flows through, by part."""
        return {
            "encoder": [p for p in self.backbone.parameters() if p.requires_grad],
            "fpn": [p for p in self.neck.parameters() if p.requires_grad],
        }

    def gradient_cosines(self, losses: dict) -> dict[str, float]:
        """Cosines between per-dataset gradients on the shared parts, and their norms.

        Keys: ``gradcos.{part}.{a}~{b}`` for each pair of heads, ``gradnorm.{part}.{head}``.
        """
        head_loss: dict[str, torch.Tensor] = {}
        for key, value in losses.items():
            head, _, rest = key.partition(".")
            if "loss" not in rest:
                continue
            v = sum(t.mean() for t in value) if isinstance(value, list | tuple) else value.mean()
            head_loss[head] = head_loss.get(head, 0) + v
        parts = self.shared_parameters()
        flat_params = [p for ps in parts.values() for p in ps]
        vectors: dict[str, dict[str, torch.Tensor]] = {part: {} for part in parts}
        for head, loss in head_loss.items():
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, flat_params, retain_graph=True, allow_unused=True)
            it = iter(grads)
            for part, ps in parts.items():
                chunk = [next(it) for _ in ps]
                vectors[part][head] = torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                        for g, p in zip(chunk, ps, strict=True)
                    ]
                ).detach()
        out: dict[str, float] = {}
        for part, vecs in vectors.items():
            for head, v in vecs.items():
                out[f"gradnorm.{part}.{head}"] = float(v.norm())
            for a, b in itertools.combinations(sorted(vecs), 2):
                cos = F.cosine_similarity(vecs[a], vecs[b], dim=0, eps=1e-12)
                out[f"gradcos.{part}.{a}~{b}"] = float(cos)
        return out

    def train_step(self, data: dict | tuple | list, optim_wrapper: Any) -> dict:
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode="loss")
        parsed, log_vars = self.parse_losses(losses)
        if self.measure_grad_cosine:
            self.measure_grad_cosine = False
            log_vars.update(self.gradient_cosines(losses))
        optim_wrapper.update_params(parsed)
        return log_vars
