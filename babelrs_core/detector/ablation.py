"""The late-alignment comparison: the same detector fine-tuned from different encoder starts.

``compare_inits(params)`` fine-tunes and evaluates once per ``finetune.init`` value (default
``csia`` = the pretraining output, and ``imagenet``), each into ``root/<init>/{finetune,eval}``,
then regenerates the "Detector fine-tuning" section of ``docs/results.md`` with both rows side by
side. Every run resumes if interrupted; finished runs are reused (pass ``rerun=True`` to redo).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babelrs_core.config import Params

DEFAULT_ROOT = Path("outputs/ablation/init")


def compare_inits(
    params: Params,
    inits: Sequence[str] = ("csia", "imagenet"),
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    manifest: str | os.PathLike[str] | None = None,
    encoder: str | os.PathLike[str] | None = None,
    results_md: str | os.PathLike[str] | None = "docs/results.md",
    rerun: bool = False,
    command: str | None = None,
    note: str | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune + evaluate per init; return the results rows (and write ``results_md``)."""
    from babelrs_core.detector.train import run_finetune
    from babelrs_core.evaluation.report import (
        load_run,
        results_section,
        run_evaluation,
        update_results_md,
    )

    root = Path(root)
    rows = []
    for init in inits:
        p = params.model_copy(deep=True)
        p.finetune.init = init  # validated on assignment
        ft, ev = root / init / "finetune", root / init / "eval"
        if rerun or not _finished(p, ft, ev, manifest, encoder):
            run_finetune(p, manifest, encoder, ft, resume=not rerun)
            run_evaluation(p, manifest, ft, ev)
        rows.append(load_run(init, ev, ft))
    if results_md:
        update_results_md(results_md, results_section(rows, command, note))
    return rows


def _finished(
    params: Params,
    ft: Path,
    ev: Path,
    manifest: str | os.PathLike[str] | None,
    encoder: str | os.PathLike[str] | None,
) -> bool:
    """Both outputs exist and the fine-tuning ran with these very params."""
    import json

    from babelrs_core.detector.train import fingerprint

    if not ((ft / "detector.json").exists() and (ev / "metrics" / "eval.json").exists()):
        return False
    if not (ft / "run.json").exists():
        return False
    enc = Path(encoder or params.paths.pretrain_out) if params.finetune.init == "csia" else None
    now = json.loads(json.dumps(fingerprint(params, Path(manifest or params.paths.manifest), enc)))
    saved = json.loads((ft / "run.json").read_text())
    iters = (
        json.loads((ft / "train.json").read_text()).get("iters")
        if (ft / "train.json").exists()
        else None
    )
    return saved == now and iters == params.finetune.iters


COMMAND = "python -m babelrs_core.detector.ablation --params params.yaml"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m babelrs_core.detector.ablation``: run the comparison, update docs/results.md."""
    import argparse
    import json

    from babelrs_core.config import load_params

    ap = argparse.ArgumentParser(description="csia vs imagenet fine-tuning (late-alignment switch)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--inits", nargs="+", default=["csia", "imagenet"])
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--manifest", default=None)
    ap.add_argument(
        "--encoder", default=None, help="pretraining output (default paths.pretrain_out)"
    )
    ap.add_argument("--results-md", default="docs/results.md")
    ap.add_argument("--rerun", action="store_true", help="train again even if finished")
    ap.add_argument("--note", default=None, help="a paragraph under the tables (how it was run)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    rows = compare_inits(
        params, args.inits, args.root, args.manifest, args.encoder, args.results_md or None,
        rerun=args.rerun, command=COMMAND, note=args.note,
    )  # fmt: skip
    print(json.dumps({r["label"]: r["eval"]["overall"] for r in rows}, indent=2))


if __name__ == "__main__":
    main()
