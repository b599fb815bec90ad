"""The ablation plan: which pretraining runs and which fine-tuning runs, with which params.

Every variant of ``ablation.variants`` is fine-tuned once per precision and seed with the same
number of iterations (equal compute). Variants that start from CSIA pretraining get their encoder
from a pretraining run with the variant's ``pretrain`` overrides; variants whose pretraining params
agree share one run. fp16 on a CPU device follows ``ablation.cpu_fp16`` (``probe``: a short run of
the first seed that records speed and non-finite steps, not evaluated; ``skip``; ``full``).

Layout under ``ablation.out_root``::

    pretrain/<name>/                      run_pretraining outputs + job.json
    runs/<variant>/<precision>/seed<k>/   finetune/ (run_finetune) + eval/ (run_evaluation)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babelrs_core.config import Params, ablation_section

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

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.precision}/seed{self.seed}"

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
    finetunes: list[FinetuneJob] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # variant, precision, reason

    def pretrain_job(self, name: str) -> PretrainJob:
        return next(j for j in self.pretrains if j.name == name)

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
                }
                for j in self.finetunes
            ],
            "skipped": self.skipped,
        }


def build_plan(params: Params, device: str | None = None) -> Plan:
    """The plan for ``params.ablation`` on ``device`` (default: ``finetune.device`` resolved)."""
    if device is None:
        from babelrs_core.detector.config import resolve_device

        device = resolve_device(params.finetune.device)
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
    return plan


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
    p.finetune = ft
    p.seed = seed
    out = root / "runs" / variant / precision / f"seed{seed}"
    return FinetuneJob(variant, label, precision, seed, mode, p, out, pretrain)
