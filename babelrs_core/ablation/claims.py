"""The ablation's claims: every variant against ``ours``, the difference in the ordering metric
and in each dataset's mAP with its paired bootstrap 95 % interval over the evaluation images
(:mod:`babelrs_core.evaluation.bootstrap`), and one plain sentence per claim.

Everything is read from the runs' evaluation folders (``eval_info.json``, ``predictions/``,
``metrics/eval.json``) and the manifest they name; runs evaluated before predictions were written
are listed instead of compared.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from babelrs_core.ablation.plan import Plan
from babelrs_core.ablation.rows import RunRow
from babelrs_core.concepts import DATASETS
from babelrs_core.detections import GtImage
from babelrs_core.evaluation.bootstrap import (
    LEVEL,
    IntervalDict,
    MissingPredictionsError,
    RunScores,
    agrees_with,
    eval_tables,
    paired_difference,
    resample_indices,
    run_scores,
)
from babelrs_core.evaluation.results_section import SHORT
from babelrs_core.io.markdown import table_head, table_row

REFERENCE = "ours"
NAMES = {"hmap": "H-mAP", "map": "overall mAP", "ap50": "overall AP@50"}


class Comparison(TypedDict):
    """``REFERENCE`` against one variant: the seeds both have, an interval per claim key."""

    variant: str
    label: str
    seeds: list[int]
    intervals: dict[str, IntervalDict]


class Claims(TypedDict):
    """The comparisons of one precision (:func:`compute_claims`), or the ``problem`` why none."""

    precision: str
    reference: str
    samples: int
    seed: int
    level: float
    keys: list[str]  # the ordering metric, then each evaluated dataset's mAP
    comparisons: list[Comparison]
    no_predictions: list[str]  # run keys left out: evaluated without saved predictions
    mismatched: list[str]  # ... whose recomputed scores differ from metrics/eval.json
    unpaired: list[str]  # ... evaluated on other images, or no seed in common
    problem: str | None
    images: NotRequired[dict[str, int]]  # evaluation images per dataset
    seconds: NotRequired[float]


def claim_keys(order_metric: str) -> list[str]:
    """The ordering metric, then each dataset's mAP."""
    return [f"overall.{order_metric}"] + [f"{d}.map" for d in DATASETS]


def key_name(key: str) -> str:
    ds, m = key.split(".")
    return NAMES[m] if ds == "overall" else f"{SHORT.get(ds, ds)} mAP"


def compute_claims(plan: Plan, rows: Sequence[RunRow], precision: str) -> Claims:
    """The comparisons at ``precision`` (full, evaluated runs whose row is ``ok``)."""
    ab = plan.params.ablation
    t0 = time.perf_counter()
    out: Claims = {
        "precision": precision,
        "reference": REFERENCE,
        "samples": ab.bootstrap_samples,
        "seed": ab.bootstrap_seed,
        "level": LEVEL,
        "keys": claim_keys(ab.order_metric),
        "comparisons": [],
        "no_predictions": [],
        "mismatched": [],
        "unpaired": [],
        "problem": None,
    }
    ok = {
        (r["variant"], r["seed"])
        for r in rows
        if r["precision"] == precision and r["mode"] == "full" and r["status"] == "ok"
    }
    jobs = [j for j in plan.finetunes if j.precision == precision and (j.variant, j.seed) in ok]
    if REFERENCE not in {j.variant for j in jobs}:
        out["problem"] = f"no evaluated `{REFERENCE}` run at {precision}"
        return out
    gt_cache: dict[tuple[Any, ...], list[GtImage]] = {}
    tables: dict[tuple[str, int], Any] = {}
    for j in jobs:
        try:
            tables[(j.variant, j.seed)] = eval_tables(j.eval_dir, gt_cache)[0]
        except (MissingPredictionsError, FileNotFoundError):
            out["no_predictions"].append(j.key)
    refs = [k for k in tables if k[0] == REFERENCE]
    if not refs:
        out["problem"] = f"the `{REFERENCE}` runs at {precision} have no saved predictions"
        return out
    sizes = {t.name: t.num_images for t in tables[refs[0]]}
    for k in list(tables):
        if {t.name: t.num_images for t in tables[k]} != sizes:
            out["unpaired"].append(f"{k[0]}/{precision}/seed{k[1]}")
            del tables[k]
    indices = resample_indices(sizes, ab.bootstrap_samples, ab.bootstrap_seed)
    scores: dict[str, dict[int, RunScores]] = {}
    evals = {(r["variant"], r["seed"]): r["eval"] for r in rows if r["precision"] == precision}
    for (variant, seed), tabs in tables.items():
        rs = run_scores(tabs, indices)
        scores.setdefault(variant, {})[seed] = rs
        if not agrees_with(rs.full, evals.get((variant, seed)) or {}):
            out["mismatched"].append(f"{variant}/{precision}/seed{seed}")
    evaluated = next(iter(scores[REFERENCE].values())).full
    out["keys"] = [k for k in out["keys"] if k in evaluated]  # the datasets evaluated
    labels = {n: v.label for n, v in ab.variants.items()}
    order = [v for v in ab.expected_order if v in scores] + sorted(
        v for v in scores if v not in ab.expected_order
    )
    for variant in order:
        if variant == REFERENCE:
            continue
        common = sorted(set(scores[REFERENCE]) & set(scores[variant]))
        if not common:
            out["unpaired"].append(f"{variant}/{precision} (no seed in common with {REFERENCE})")
            continue
        iv = paired_difference(scores[REFERENCE], scores[variant], out["keys"])
        out["comparisons"].append(
            {
                "variant": variant,
                "label": labels.get(variant, variant),
                "seeds": common,
                "intervals": {k: v.as_dict() for k, v in iv.items()},
            }
        )
    out["images"] = sizes
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def sentence(comparison: Comparison, key: str, reference: str = REFERENCE) -> str:
    """``ours > imagenet: *shown* (Δ H-mAP +1.23, 95 % CI [0.40, 2.10])``."""
    iv = comparison["intervals"][key]
    pct = round(100 * iv["level"])
    return (
        f"{reference} > {comparison['variant']}: *{iv['verdict']}* (Δ {key_name(key)} "
        f"{iv['delta']:+.2f}, {pct} % CI [{iv['low']:.2f}, {iv['high']:.2f}])"
    )


def _cell(iv: IntervalDict) -> str:
    return f"{iv['delta']:+.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def claims_markdown(claims: Claims) -> str:
    """The claims paragraph and table of one precision (or why there are none)."""
    prec, keys = claims["precision"], claims["keys"]
    name = key_name(keys[0])
    head = (
        f"**Claims, {prec}** (paired bootstrap over the evaluation images, "
        f"{claims['samples']} resamples, seed {claims['seed']}; Δ = {REFERENCE} − variant, "
        'averaged over the seeds both have; docs/ablation.md, "How to read the claims"). '
    )
    notes = []
    if claims["no_predictions"]:
        notes.append(
            "Runs without saved predictions (evaluated before `eval/predictions/` was written; "
            "rerun `make ablation` to evaluate them again), left out: "
            + ", ".join(claims["no_predictions"])
            + "."
        )
    if claims["unpaired"]:
        notes.append("Not paired (other evaluation images): " + ", ".join(claims["unpaired"]) + ".")
    if claims["mismatched"]:
        notes.append(
            "The scores recomputed from the predictions differ from `metrics/eval.json` for "
            + ", ".join(claims["mismatched"])
            + " (has the manifest changed since they were evaluated?); their intervals are "
            "suspect."
        )
    statements = claim_statements(claims)
    if claims["problem"] or not claims["comparisons"]:
        return head + " ".join(statements + notes)
    lines = [head + f"Basis: {name}.", ""]
    lines += [f"* {s}" for s in statements]
    lines += [
        "",
        *table_head(["claim", "seeds", *(f"Δ {key_name(k)} [95 % CI]" for k in keys)], "llr"),
    ]
    for c in claims["comparisons"]:
        cells = [f"{REFERENCE} > {c['variant']}", ", ".join(str(s) for s in c["seeds"])]
        cells += [
            _cell(c["intervals"][k])
            + (f" *{c['intervals'][k]['verdict']}*" if k == keys[0] else "")
            for k in keys
        ]
        lines.append(table_row(cells))
    sizes = ", ".join(f"{SHORT.get(d, d)} {n}" for d, n in (claims.get("images") or {}).items())
    lines += [
        "",
        f"Evaluation images resampled per dataset: {sizes}. *shown*: the interval lies above 0; "
        "*not shown*: it contains 0; *reversed*: it lies below 0. The intervals cover the "
        "choice of evaluation images for these trained detectors, not retraining with other "
        f"seeds (the seed spread is in the table above). Computed in {claims['seconds']} s.",
    ]
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines)


def claim_statements(claims: Claims) -> list[str]:
    """The plain sentences of one precision (what ``babelrs ablation run|report`` print): one per
    claim, or why there are none."""
    if claims["problem"] or not claims["comparisons"]:
        why = claims["problem"] or f"no variant to compare with at {claims['precision']}"
        return [f"No claims: {why}."]
    return [sentence(c, claims["keys"][0]) for c in claims["comparisons"]]
