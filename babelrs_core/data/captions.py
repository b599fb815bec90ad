"""Scene captions as part of the data contract: a table beside the manifest.

SOI-mini's generator writes one scene graph per image, caption included, to
``<raw>/scenes/<dataset>/<split>.jsonl``; real datasets have no captions. The import stage copies
the captions of the imported images into ``paths.captions`` (Parquet: ``image_id``, ``dataset``,
``split``, ``caption``; empty for datasets without scenes), the validate stage checks it against
the manifest, and pretraining reads captions from it, never from the raw folder, so a training
machine needs only the manifest, this table and the images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from babelrs_core.data.layout import scenes_file
from babelrs_core.data.validation.report import Failure
from babelrs_core.io.atomic import atomic_path

COLUMNS = ["image_id", "dataset", "split", "caption"]


def collect_captions(raw: str | os.PathLike[str], frame: pd.DataFrame) -> pd.DataFrame:
    """Captions of the images in ``frame`` (manifest rows) from the scenes files under ``raw``,
    for the dataset splits that have one."""
    rows: list[dict[str, str]] = []
    wanted = set(frame["image_id"])
    for (ds, split), _ in frame.groupby(["dataset", "split"]):
        path = scenes_file(Path(raw), str(ds), str(split))
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                scene = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            stem, caption = scene.get("stem"), scene.get("caption")
            image_id = f"{ds}/{split}/{stem}"
            if stem and caption and image_id in wanted:
                rows.append(
                    {
                        "image_id": image_id,
                        "dataset": str(ds),
                        "split": str(split),
                        "caption": str(caption),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_captions(table: pd.DataFrame, target: str | os.PathLike[str]) -> Path:
    """Write the captions table atomically (sorted by image id)."""
    target = Path(target)
    table = table[COLUMNS].sort_values("image_id").reset_index(drop=True)
    with atomic_path(target, suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return target


def read_captions(source: str | os.PathLike[str]) -> dict[str, str]:
    """image_id -> caption (empty when the table does not exist: no captions)."""
    path = Path(source)
    if not path.exists():
        return {}
    table = pd.read_parquet(path, columns=COLUMNS)
    return dict(zip(table["image_id"], table["caption"], strict=True))


def caption_problems(
    table: pd.DataFrame, frame: pd.DataFrame, source: str, limit: int = 20
) -> list[str]:
    """What is wrong with a captions table against its manifest: missing columns, images the
    manifest does not have, empty or duplicated captions (first ``limit`` of each)."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        return [f"{source}: missing column(s) {', '.join(missing)}"]
    problems: list[str] = []
    known = set(frame["image_id"])
    unknown = sorted(set(table["image_id"]) - known)
    problems += [
        f"{source}: caption for {i!r}, an image the manifest does not have" for i in unknown[:limit]
    ]
    empty = table.loc[table["caption"].fillna("").str.strip() == "", "image_id"].tolist()
    problems += [f"{source}: empty caption for {i!r}" for i in empty[:limit]]
    dup = sorted(table.loc[table["image_id"].duplicated(), "image_id"].unique())
    problems += [f"{source}: more than one caption for {i!r}" for i in dup[:limit]]
    return problems


def captions_failure(
    path: str | os.PathLike[str], frame: pd.DataFrame, limit: int
) -> Failure | None:
    """The validate stage's ``captions_match_manifest`` check (None when it passes or there is no
    table)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        problems = [f"{path}: unreadable Parquet ({type(exc).__name__}: {exc})"]
    else:
        problems = caption_problems(table, frame, str(path), limit)
    if not problems:
        return None
    return Failure(
        "captions_match_manifest",
        "captions",
        "babelrs.captions",
        "every caption belongs to a manifest image, once, and is not empty",
        len(problems),
        problems[:limit],
    )
