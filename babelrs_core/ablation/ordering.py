"""The ablation's mean +- spread ordering of the variants: did the paper's expected ordering hold
for a metric at a precision (:func:`ordering`), its sentence (:func:`statement`) and one-line form
(:func:`brief`), and which dataset bounds H-mAP (:func:`bottleneck`).

The claims (every variant against ``ours``) rest on paired bootstrap intervals over the evaluation
images (:mod:`babelrs_core.ablation.claims`); the ordering here is a description of the means.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TypedDict

from babelrs_core.ablation.rows import Group
from babelrs_core.concepts import DATASETS
from babelrs_core.evaluation.results_section import SHORT

METRIC_NAMES = {"hmap": "H-mAP", "map": "overall mAP", "ap50": "overall AP@50"}


class Score(TypedDict):
    mean: float
    spread: float  # over seeds


class Pair(TypedDict):
    """Two variants adjacent in the expected order."""

    better: str  # expected to score higher
    worse: str
    gap: float  # better - worse
    spread: float  # the two seed spreads added
    kept: bool  # better scored higher
    beyond_spread: bool  # |gap| > spread


class Ordering(TypedDict):
    """:func:`ordering`'s result for one metric at one precision."""

    precision: str
    metric: str  # overall.<metric>
    expected: list[str]
    measured: list[str]  # best first
    scores: dict[str, Score]
    pairs: list[Pair]
    held: bool
    clear: bool
    concordant: int
    total_pairs: int
    missing: list[str]


def ordering(
    groups: Sequence[Group],
    expected: Sequence[str],
    metric_name: str = "hmap",
    precision: str = "fp32",
) -> Ordering:
    """Did the expected ordering (best first) hold for ``overall.<metric_name>`` at ``precision``?

    ``held``: every adjacent pair of ``expected`` that was measured keeps its order and every
    expected variant was measured. Each flipped adjacent pair records the gap and whether it
    exceeds the two variants' seed spreads added (``beyond_spread``); ``clear``: held and every
    adjacent gap exceeds the spreads. ``concordant``: pairs (any distance) in the expected order.
    """
    key = f"overall.{metric_name}"
    scores = {
        g["variant"]: (g["mean"][key], g["spread"][key])
        for g in groups
        if g["precision"] == precision and g["mode"] == "full" and key in g["mean"]
    }
    present = [v for v in expected if v in scores]
    pairs: list[Pair] = []
    for a, b in itertools.pairwise(present):
        (ma, sa), (mb, sb) = scores[a], scores[b]
        pairs.append(
            {
                "better": a,
                "worse": b,
                "gap": ma - mb,
                "spread": sa + sb,
                "kept": ma > mb,
                "beyond_spread": abs(ma - mb) > sa + sb,
            }
        )
    concordant = sum(
        scores[a][0] > scores[b][0] for i, a in enumerate(present) for b in present[i + 1 :]
    )
    total = len(present) * (len(present) - 1) // 2
    missing = [v for v in expected if v not in scores]
    held = bool(present) and not missing and all(p["kept"] for p in pairs)
    return {
        "precision": precision,
        "metric": key,
        "expected": list(expected),
        "measured": sorted(scores, key=lambda v: -scores[v][0]),
        "scores": {v: {"mean": m, "spread": s} for v, (m, s) in scores.items()},
        "pairs": pairs,
        "held": held,
        "clear": held and all(p["beyond_spread"] for p in pairs),
        "concordant": concordant,
        "total_pairs": total,
        "missing": missing,
    }


def statement(order: Ordering, spread: str = "half_range") -> str:
    """The plain sentence(s) of an :func:`ordering` result."""
    name = METRIC_NAMES.get(order["metric"].split(".")[-1], order["metric"])
    sc = order["scores"]
    if not sc:
        return f"{order['precision']}: no evaluated runs, so the ordering cannot be checked."
    exp = " > ".join(order["expected"])
    ms = order["measured"]
    got = f"{ms[0]} {sc[ms[0]]['mean']:.2f}" + "".join(
        (" = " if sc[b]["mean"] == sc[a]["mean"] else " > ") + f"{b} {sc[b]['mean']:.2f}"
        for a, b in itertools.pairwise(ms)
    )
    text = (
        f"**{order['precision']}, {name}** (mean ± {spread.replace('_', '-')} over seeds). "
        f"Expected (paper): {exp}. Measured: {got}. "
    )
    if order["missing"]:
        text += f"Not measured: {', '.join(order['missing'])}. "
    # adjacent pairs in the expected order whose gap the seed spreads could explain
    noisy = "; ".join(
        f"{p['better']} − {p['worse']} = {p['gap']:+.2f} vs spread {p['spread']:.2f}"
        for p in order["pairs"]
        if p["kept"] and not p["beyond_spread"]
    )
    if order["held"]:
        text += "**The paper's ordering held here**"
        text += (
            ", and every adjacent gap exceeds the seed spreads."
            if order["clear"]
            else f", but not every adjacent gap exceeds the seed spreads: {noisy}."
        )
    else:
        flipped = [p for p in order["pairs"] if not p["kept"]]
        text += "**The paper's ordering did not hold here**"
        if flipped:
            text += ": adjacent pairs out of order " + "; ".join(
                f"{p['better']} − {p['worse']} = {p['gap']:+.2f} ("
                + ("tied" if p["gap"] == 0 else "flipped")
                + (", beyond" if p["beyond_spread"] else ", within")
                + f" the seed spread {p['spread']:.2f})"
                for p in flipped
            )
        text += "."
        if noisy:
            text += f" Adjacent pairs in the expected order but within the seed spread: {noisy}."
    text += (
        f" {order['concordant']} of {order['total_pairs']} variant pairs are in the expected order."
    )
    return text


def brief(order: Ordering) -> str:
    """One line for a secondary metric: the measured order, whether the expected one held, and
    how many variant pairs agree with it."""
    name = METRIC_NAMES.get(order["metric"].split(".")[-1], order["metric"])
    sc = order["scores"]
    if not sc:
        return f"{name}: no evaluated runs"
    got = " > ".join(f"{v} {sc[v]['mean']:.2f}" for v in order["measured"])
    if len(order["expected"]) < 2:
        return f"{name}: {got}"  # no expected ordering to check (a study)
    verdict = (
        "did not hold"
        if not order["held"]
        else "held" + (" beyond the spreads" if order["clear"] else "")
    )
    return (
        f"{name}: {got} (the expected ordering {verdict}; {order['concordant']} of "
        f"{order['total_pairs']} pairs in the expected order)"
    )


def bottleneck(groups: Sequence[Group], precision: str = "fp32") -> str | None:
    """H-mAP is at most len(datasets) x the lowest per-dataset mAP: name the dataset with the
    lowest mAP in each evaluated group (None when nothing was evaluated)."""
    lows: dict[str, list[tuple[str, float]]] = {}
    for g in groups:
        if g["precision"] != precision or g["mode"] != "full":
            continue
        per = {d: g["mean"][f"{d}.map"] for d in DATASETS if f"{d}.map" in g["mean"]}
        if per:
            d = min(per, key=lambda k: per[k])
            lows.setdefault(d, []).append((g["variant"], per[d]))
    if not lows:
        return None
    ranges = {
        d: f"mAP {min(v for _, v in vs):.2f}–{max(v for _, v in vs):.2f}" for d, vs in lows.items()
    }
    text = (
        "H-mAP, the harmonic mean of the per-dataset mAPs, is at most "
        f"{len(DATASETS)} × the lowest of them. At {precision} the lowest-mAP dataset is "
    )
    if len(lows) == 1:
        (d,) = lows
        name = SHORT.get(d, d)
        return text + (
            f"{name} in every variant ({ranges[d]}), so the H-mAP ordering mostly follows "
            f"{name}'s mAP."
        )
    return (
        text
        + "; ".join(
            f"{SHORT.get(d, d)} in {len(vs)} variant(s) ({ranges[d]})" for d, vs in lows.items()
        )
        + "."
    )
