"""The model card: the description of a registered detector version, built from its tags.

Everything comes from the version's own tags (``eval.*`` from the evaluation stage, ``detector.*``,
``git.*`` and ``gate.*``), so ``register`` and every later ``promote`` write the same card and it
never disagrees with the numbers the gate used. MLflow shows it as the version's description
(markdown).
"""

from __future__ import annotations

from babelrs_core.concepts import DATASETS
from babelrs_core.io.markdown import table_head


def _num(tags: dict[str, str], key: str) -> str:
    value = tags.get(key)
    return "–" if value is None else f"{float(value):.2f}"


def model_card(name: str, version: str, tags: dict[str, str], run_id: str | None = None) -> str:
    """Markdown description of ``name`` version ``version`` from its ``tags``."""
    lines = [
        f"**{name} v{version}**: babelrs shared multi-sensor detector, "
        f"{tags.get('detector.encoder', '?')} encoder ({tags.get('detector.init', '?')} start).",
        "",
        *table_head(["evaluation", "AP@50", "mAP(.5:.95)", "H-mAP"], "lr"),
    ]
    for ds in [*DATASETS, "overall"]:
        if f"eval.{ds}.map" not in tags:
            continue
        hmap = _num(tags, "eval.overall.hmap") if ds == "overall" else ""
        lines.append(
            f"| {ds} | {_num(tags, f'eval.{ds}.ap50')} | {_num(tags, f'eval.{ds}.map')} | {hmap} |"
        )
    decision = tags.get("gate.decision")
    gate = (
        f"**{decision}**: {tags.get('gate.reason', '')}"
        if decision
        else "not put through the promotion gate"
    )
    dirty = " (uncommitted changes)" if tags.get("git.dirty") == "true" else ""
    lines += [
        "",
        f"Gate: {gate}.",
        f"Evaluation splits: {tags.get('eval.splits', '?')}; data hash "
        f"`{tags.get('eval.data_hash', '?')}`.",
        f"Weights sha256 `{tags.get('detector.sha256', '?')}`; code: git commit "
        f"`{tags.get('git.commit', '?')}`{dirty}.",
    ]
    if run_id:
        lines.append(
            f"MLflow run `{run_id}`: the model, `eval.json` and `eval_info.json` "
            "(PR curves and detection pictures in the evaluate stage's run)."
        )
    return "\n".join(lines)
