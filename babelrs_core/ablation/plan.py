"""The ablation plan: which pretraining runs and which fine-tuning runs, with which params.

Every variant of ``ablation.variants`` is fine-tuned once per precision and seed with the same
number of iterations (equal compute). Variants that start from CSIA pretraining get their encoder
from a pretraining run with the variant's ``pretrain`` overrides; variants whose pretraining params
agree share one run. fp16 on a CPU device follows ``ablation.cpu_fp16`` (``probe``: a short run of
the first seed that records speed and non-finite steps, not evaluated; ``skip``; ``full``).

Two controls join the variants. A *compute control* (``ablation.compute_controls``, e.g.
``imagenet_long``) fine-tunes a start without pretraining for ``iters`` plus the iterations that a
csia variant's pretraining time buys; its iterations are known only once that pretraining and the
start's own runs have run (:mod:`babelrs_core.ablation.compute`), so its job waits for them
(``FinetuneJob.compute``). The *label-efficiency runs* (``Plan.label_runs``) fine-tune
``label_variants`` with ``label_fractions`` < 1 of ``label_dataset``'s training images (the
fraction 1.0 is the variants' own runs).

Layout under ``ablation.out_root``::

    pretrain/<name>/                      run_pretraining outputs + job.json
    runs/<variant>/<precision>/seed<k>/   finetune/ (run_finetune) + eval/ (run_evaluation)
    runs/<control>/<precision>/seed<k>/   the same for a compute control (+ compute.json)
    label_efficiency/<variant>@<dataset>-<fraction>/<precision>/seed<k>/   label-efficiency runs
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from babelrs_core.config import Params, ablation_section, captions_beside

Mode = Literal["full", "probe"]


@dataclass(frozen=True)
class PretrainJob:
    """One pretraining run (shared by the variants that agree on its params)."""

    name: str
    variants: tuple[str, ...]
    params: Params
    out: Path

    def fingerprint(self) -> dict[str, Any]:
        from babelrs_core.pretrain.train import fingerprint

        return json.loads(json.dumps(fingerprint(self.params)))


@dataclass(frozen=True)
class ComputeMatch:
    """How a compute control's iterations are decided once its inputs ran: ``base_iters`` +
    ``pretrain``'s training time / the mean time per iteration of the ``measured`` runs."""

    pretrain: str  # PretrainJob.name
    measured: tuple[str, ...]  # FinetuneJob keys (the start's own runs at the same precision)
    base_iters: int


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning (+ evaluation unless a probe) of one variant, precision and seed."""

    variant: str
    label: str
    precision: str
    seed: int
    mode: Mode
    params: Params
    out: Path
    pretrain: str | None  # PretrainJob.name for csia variants
    name: str = ""  # run name when not the variant's (label-efficiency runs)
    label_fraction: float = 1.0  # share of ablation.label_dataset's training images
    compute: ComputeMatch | None = None  # compute controls: iterations decided at run time
    measured: dict[str, Any] | None = None  # ... and how (compute.json), once decided

    @property
    def run_name(self) -> str:
        return self.name or self.variant

    @property
    def key(self) -> str:
        return f"{self.run_name}/{self.precision}/seed{self.seed}"

    @property
    def pending(self) -> bool:
        """A compute control whose iterations are not decided yet."""
        return self.compute is not None and self.measured is None

    @property
    def finetune_dir(self) -> Path:
        return self.out / "finetune"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"


@dataclass
class Plan:
    """Everything an ablation run does (:class:`~babelrs_core.ablation.run.AblationRun`), decided
    before anything runs."""

    params: Params
    device: str
    manifest: Path
    root: Path
    pretrains: list[PretrainJob] = field(default_factory=list)
    finetunes: list[FinetuneJob] = field(default_factory=list)  # variants + compute controls
    skipped: list[dict[str, str]] = field(default_factory=list)  # variant, precision, reason
    label_runs: list[FinetuneJob] = field(default_factory=list)  # label efficiency, fraction < 1

    def pretrain_job(self, name: str) -> PretrainJob:
        return next(j for j in self.pretrains if j.name == name)

    def all_finetunes(self) -> list[FinetuneJob]:
        """Every fine-tuning of the plan: the variants', the compute controls', the label runs."""
        return [*self.finetunes, *self.label_runs]

    def replace(self, job: FinetuneJob) -> None:
        """Put ``job`` in place of the job with its key (a compute control once decided)."""
        for jobs in (self.finetunes, self.label_runs):
            for i, old in enumerate(jobs):
                if old.key == job.key:
                    jobs[i] = job

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (what ``babelrs ablation plan`` prints)."""
        return {
            "device": self.device,
            "root": str(self.root),
            "pretrain": {j.name: list(j.variants) for j in self.pretrains},
            "finetune": [
                {
                    "run": j.key,
                    "mode": j.mode,
                    "iters": j.params.finetune.iters,
                    "init": j.params.finetune.init,
                    "pretrain": j.pretrain,
                    **({"label_fraction": j.label_fraction} if j.label_fraction < 1 else {}),
                    **({"iters_decided": not j.pending} if j.compute else {}),
                }
                for j in self.all_finetunes()
            ],
            "skipped": self.skipped,
        }


def data_root(params: Params) -> Path:
    """Where the ablation keeps its own copy of SOI-mini (``ablation.eval_images`` > 0)."""
    return Path(params.ablation.out_root) / "data"


def ablation_params(params: Params) -> Params:
    """The params every ablation run starts from (idempotent).

    With ``ablation.eval_images`` > 0 the ablation runs on its own SOI-mini under
    :func:`data_root`: each dataset's evaluation split (``evaluation.splits``) holds at least that
    many images and every other split keeps its size. Each image is drawn from its own seeded
    generator (``data/synth/generate.py:image_rng``), so the training splits are the pipeline's
    image for image and the pipeline's evaluation images are the first of the larger split; no
    run trains on an evaluation image. 0 leaves the pipeline's data and paths as they are.
    """
    n = params.ablation.eval_images
    if n == 0:
        return params
    p = params.model_copy(deep=True)
    for ds, split in p.evaluation.splits.items():
        sizes = getattr(p.soi_mini, ds).splits
        sizes[split] = max(sizes.get(split, 0), n)
    root = data_root(params)
    p.paths.raw = root / "raw"
    p.paths.manifest = root / "manifest.parquet"
    p.paths.captions = captions_beside(p.paths.manifest)
    p.paths.preview = root / "preview.png"
    p.images.source = "files"  # the ablation makes no shards of its copy
    return p


def build_plan(params: Params, device: str | None = None) -> Plan:
    """The plan for ``params.ablation`` on ``device`` (default: ``finetune.device`` resolved);
    ``plan.params`` are :func:`ablation_params` of ``params``."""
    if device is None:
        from babelrs_core.detector.config import resolve_device

        device = resolve_device(params.finetune.device)
    params = ablation_params(params)
    ab = params.ablation
    root = Path(ab.out_root)
    plan = Plan(params, device, Path(params.paths.manifest), root)
    by_fp: dict[str, PretrainJob] = {}
    owner: dict[str, str] = {}
    for name, variant in ab.variants.items():
        if variant.init != "csia":
            continue
        p = params.model_copy(deep=True)
        pt = ablation_section(params, name, "pretrain").model_copy(deep=True)
        pt.threads = ab.threads
        pt.eval_max_per_task = ab.pretrain_eval_max_per_task
        p.pretrain = pt
        p.seed = params.seed if ab.pretrain_seed is None else ab.pretrain_seed
        job = PretrainJob(name, (name,), p, root / "pretrain" / name)
        key = json.dumps(job.fingerprint(), sort_keys=True)
        if key in by_fp:
            first = by_fp[key]
            by_fp[key] = PretrainJob(first.name, (*first.variants, name), first.params, first.out)
        else:
            by_fp[key] = job
        owner[name] = by_fp[key].name
    plan.pretrains = list(by_fp.values())

    for name, variant in ab.variants.items():
        for precision in ab.precisions:
            mode: Mode = "full"
            seeds = list(ab.seeds)
            if device == "cpu" and precision == "fp16" and ab.cpu_fp16 != "full":
                if ab.cpu_fp16 == "skip":
                    plan.skipped.append(
                        {
                            "variant": name,
                            "precision": precision,
                            "reason": "fp16 on CPU (ablation.cpu_fp16: skip)",
                        }
                    )
                    continue
                mode, seeds = "probe", seeds[:1]
            for seed in seeds:
                plan.finetunes.append(
                    _finetune_job(
                        params, name, variant.label, precision, seed, mode, root, owner.get(name)
                    )
                )
    _add_compute_controls(plan, owner)
    _add_label_runs(plan, owner)
    from babelrs_core.ablation.compute import resolve_all

    resolve_all(plan)  # compute controls whose inputs already ran (a rerun, the report)
    return plan


def _full_precisions(plan: Plan, variant: str) -> list[str]:
    """The precisions at which ``variant`` runs in full (evaluated), in params order."""
    modes = {(j.variant, j.precision): j.mode for j in plan.finetunes}
    return [p for p in plan.params.ablation.precisions if modes.get((variant, p)) == "full"]


def _add_compute_controls(plan: Plan, owner: dict[str, str]) -> None:
    ab = plan.params.ablation
    for name, c in ab.compute_controls.items():
        for precision in _full_precisions(plan, c.variant):
            measured = tuple(
                j.key for j in plan.finetunes if (j.variant, j.precision) == (c.variant, precision)
            )
            for seed in ab.seeds:
                job = _finetune_job(
                    plan.params, c.variant, c.label, precision, seed, "full", plan.root, None
                )
                match = ComputeMatch(owner[c.pretrain_of], measured, ab.iters)
                out = plan.root / "runs" / name / precision / f"seed{seed}"
                plan.finetunes.append(replace(job, variant=name, out=out, compute=match))


def _add_label_runs(plan: Plan, owner: dict[str, str]) -> None:
    ab = plan.params.ablation
    ds = ab.label_dataset
    for variant in ab.label_variants:
        full = _full_precisions(plan, variant)
        if not full:
            continue
        label = ab.variants[variant].label
        for fraction in sorted(f for f in ab.label_fractions if f < 1):
            for seed in ab.label_run_seeds:
                job = _finetune_job(
                    plan.params,
                    variant,
                    label,
                    full[0],
                    seed,
                    "full",
                    plan.root,
                    owner.get(variant),
                )
                job.params.finetune.label_fraction[ds] = fraction
                name = f"{variant}@{ds}-{fraction:g}"
                out = plan.root / "label_efficiency" / name / full[0] / f"seed{seed}"
                plan.label_runs.append(replace(job, name=name, out=out, label_fraction=fraction))


def _finetune_job(
    params: Params,
    variant: str,
    label: str,
    precision: str,
    seed: int,
    mode: Mode,
    root: Path,
    pretrain: str | None,
) -> FinetuneJob:
    ab = params.ablation
    p = params.model_copy(deep=True)
    ft = ablation_section(params, variant, "finetune").model_copy(deep=True)
    ft.init = ab.variants[variant].init
    ft.precision = precision
    ft.iters = ab.probe_iters if mode == "probe" else ab.iters
    ft.threads = ab.threads
    ft.log_every = ab.log_every
    ft.grad_cosine_every = ab.grad_cosine_every
    ft.val_every = 0  # the evaluation follows every full run
    p.finetune = ft
    p.seed = seed
    out = root / "runs" / variant / precision / f"seed{seed}"
    return FinetuneJob(variant, label, precision, seed, mode, p, out, pretrain)
