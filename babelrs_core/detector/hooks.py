"""mmengine hooks of the fine-tuning run: the metrics JSONL (+ callbacks) and the gradient cosine.

:class:`MetricsJsonlHook` writes one JSON line every ``interval`` iterations to ``metrics.jsonl``:
total and per-head loss (means over the window), every loss component, the pre-clip gradient norm
(last and window mean), the base learning rate, the count of non-finite (skipped) steps, seconds
per iteration, and the latest per-modality gradient cosines. Each line also goes to ``callbacks``
(``f(iteration, metrics)``): the hook point for MLflow. On resume the file is cut after the resumed
iteration, so that it always reads as one uninterrupted run.

:class:`GradCosineHook` asks the model to measure the per-head gradient cosines on the next
training step every ``interval`` iterations (see ``MultiHeadDetector.gradient_cosines``).

:class:`ValidationHook` scores the model on the validation split every ``finetune.val_every``
iterations (``validation.csv``: mAP per dataset vs iteration), so that under-training and a defect
look different while the run is still going.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from babelrs_core.detector.checkpoint import DetectorInfo
from babelrs_core.evaluation.metrics import harmonic_mean
from babelrs_core.io.atomic import write_text

MetricsCallback = Callable[[int, dict[str, Any]], None]


def _num(v: Any) -> float:
    if hasattr(v, "item"):
        v = v.item()
    return float(v)


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


@HOOKS.register_module()
class MetricsJsonlHook(Hook):
    """Window-averaged training metrics to a JSONL file and to callbacks."""

    priority = "LOW"

    def __init__(
        self,
        path: str,
        interval: int = 10,
        callbacks: Iterable[MetricsCallback] = (),
    ) -> None:
        self.path = Path(path)
        self.interval = int(interval)
        self.callbacks = list(callbacks)
        self._window: dict[str, list[float]] = {}
        self._norms: list[float] = []
        self._cosines: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._it0 = 0
        self._lr = float("nan")
        self._c0 = time.process_time()
        self._v0 = 0.0  # validation seconds at the window start (excluded from s_per_iter)

    def before_train(self, runner: Any) -> None:
        start = runner.iter
        if start == 0:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            keep = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("iter", 0) <= start
            ]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0, self._it0 = time.perf_counter(), start
        self._c0 = time.process_time()
        self._v0 = validation_seconds(runner)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._lr = float(runner.optim_wrapper.get_lr()["lr"][0])  # the lr this step uses

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: dict | None = None
    ) -> None:
        for key, value in (outputs or {}).items():
            if key.startswith(("gradcos.", "gradnorm.")):
                self._cosines[key] = _num(value)
            else:
                self._window.setdefault(key, []).append(_num(value))
        norm = getattr(runner.optim_wrapper, "last_grad_norm", None)
        if norm is not None:
            self._norms.append(float(norm))
        it = runner.iter + 1
        if it % self.interval and it != runner.max_iters:
            return
        metrics: dict[str, Any] = {"iter": it}
        for key, values in self._window.items():
            finite = [v for v in values if math.isfinite(v)]
            metrics[key] = sum(finite) / len(finite) if finite else None
        metrics["grad_norm"] = _clean(self._norms[-1]) if self._norms else None
        finite_norms = [v for v in self._norms if math.isfinite(v)]
        metrics["grad_norm_mean"] = sum(finite_norms) / len(finite_norms) if finite_norms else None
        metrics["lr"] = self._lr  # base lr (the heads' group) of the window's last step
        wrapper = runner.optim_wrapper
        metrics["nonfinite_steps"] = int(getattr(wrapper, "nonfinite_steps", 0))
        scaler = getattr(wrapper, "scaler", None)
        if scaler is not None:
            metrics["loss_scale"] = float(scaler.get_scale())
        now, cpu, val = time.perf_counter(), time.process_time(), validation_seconds(runner)
        metrics["s_per_iter"] = (now - self._t0 - (val - self._v0)) / max(it - self._it0, 1)
        # CPU seconds of this process per iteration: wall time on a quiet machine, roughly x threads
        metrics["cpu_s_per_iter"] = (cpu - self._c0) / max(it - self._it0, 1)
        metrics.update(self._cosines)
        self._t0, self._it0, self._c0, self._v0 = now, it, cpu, val
        self._window, self._norms = {}, []
        with self.path.open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        for cb in self.callbacks:
            cb(it, metrics)


def validation_seconds(runner: Any) -> float:
    """Wall seconds :class:`ValidationHook` has spent so far in this run."""
    return float(getattr(runner, "_babelrs_validation_s", 0.0))


class ValidationHook(Hook):
    """Every ``interval`` iterations and at the last one, score the model being trained on the
    validation images (``items``: dataset -> :func:`~babelrs_core.detector.data.image_items`)
    with the evaluation stage's own code: AP@50 / mAP per dataset (rotated for oriented heads)
    and H-mAP. Each point is appended to ``path`` (CSV, one row per iteration: the DVC plot of
    mAP vs iteration) and sent to ``callbacks`` as ``val.<dataset>.map`` / ``.ap50``,
    ``val.hmap``. Its time is excluded from the training ``s_per_iter``."""

    priority = "VERY_LOW"

    def __init__(
        self,
        path: str | Path,
        interval: int,
        items: dict[str, list[dict[str, Any]]],
        info: DetectorInfo,
        batch_size: int = 4,
        ignore_difficult: bool = True,
        max_dets: int = 100,
        callbacks: Iterable[MetricsCallback] = (),
        source: Any = None,
    ) -> None:
        self.path = Path(path)
        self.source = source  # ImageSource of the run (None: the loose files)
        self.interval = int(interval)
        self.items, self.info = items, info
        self.batch_size, self.max_dets = batch_size, max_dets
        self.ignore_difficult = ignore_difficult
        self.callbacks = list(callbacks)

    def before_train(self, runner: Any) -> None:
        start = runner.iter
        if start == 0 or not self.path.exists():
            self.path.unlink(missing_ok=True)
            return
        lines = self.path.read_text().splitlines()  # resumed: drop the points after the resume
        keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= start]
        write_text(self.path, "".join(ln + "\n" for ln in keep))

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: dict | None = None
    ) -> None:
        it = runner.iter + 1
        if self.interval <= 0 or (it % self.interval and it != runner.max_iters):
            return
        t0 = time.perf_counter()
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        try:
            row = self.score(model)
        finally:
            model.train()
        metrics: dict[str, Any] = {}
        for ds, (ap50, map_) in row.items():
            metrics[f"val.{ds}.ap50"], metrics[f"val.{ds}.map"] = ap50, map_
        metrics["val.hmap"] = harmonic_mean([m for _, m in row.values()])
        self._append(it, row, metrics["val.hmap"])
        runner._babelrs_validation_s = validation_seconds(runner) + time.perf_counter() - t0
        metrics["val.seconds"] = time.perf_counter() - t0
        for cb in self.callbacks:
            cb(it, metrics)

    def score(self, model: Any) -> dict[str, tuple[float, float]]:
        """``{dataset: (AP@50, mAP)}`` of ``model`` on the validation items."""
        import torch

        from babelrs_core.detector.inference import Detector
        from babelrs_core.evaluation.report import predict_split, score_split

        detector = Detector(model, self.info)
        out = {}
        with torch.no_grad():
            for ds, items in self.items.items():
                gt, preds = predict_split(detector, items, ds, self.batch_size, source=self.source)
                oriented = detector.box_types[ds] == "obox"
                s = score_split(ds, gt, preds, oriented, self.ignore_difficult, self.max_dets)
                out[ds] = (round(s.ap50, 3), round(s.map, 3))
        return out

    def _append(self, it: int, row: dict[str, tuple[float, float]], hmap: float) -> None:
        datasets = list(self.items)
        header = "iter," + ",".join([*datasets, *(f"{d}_ap50" for d in datasets), "hmap"])
        values = [row[d][1] for d in datasets] + [row[d][0] for d in datasets] + [hmap]
        old = self.path.read_text() if self.path.exists() else header + "\n"
        line = f"{it}," + ",".join(f"{v:.3f}" for v in values)
        write_text(self.path, old + line + "\n")


@HOOKS.register_module()
class GradCosineHook(Hook):
    """Every ``interval`` iterations (and at the first), measure per-head gradient cosines."""

    priority = "NORMAL"

    def __init__(self, interval: int = 25) -> None:
        self.interval = int(interval)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.interval <= 0:
            return
        it = runner.iter + 1
        if it == 1 or it % self.interval == 0:
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            model.measure_grad_cosine = True


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` (empty list when absent)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
