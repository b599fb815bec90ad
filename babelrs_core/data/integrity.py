"""Data integrity checks: the image files are the bytes the manifest recorded, the shards are as
long and as hashed as their index says. Run by the validate stage (as part of its report) and
again by the training stages before they start (:func:`check_training_data`), so that a file
changed or damaged after validation is named before any training output is written.

The comparison of an image's bytes with the manifest's ``sha256`` lives here once
(:func:`recorded_sha256`, :func:`content_matches`, :func:`content_changed`): the validate stage's
``image_content_unchanged`` check (:mod:`babelrs_core.data.validation.images`) and the training
pre-check (:func:`image_hash_problems`) both use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from babelrs_core.data.manifest import images, read_manifest
from babelrs_core.data.validation.report import Failure
from babelrs_core.errors import BadInputError
from babelrs_core.io.hashing import file_sha256


class DataIntegrityError(BadInputError):
    """Image files or shards differ from what the manifest / shard index recorded."""


def recorded_sha256(frame: pd.DataFrame) -> dict[str, str]:
    """``image_id -> sha256`` the manifest recorded for each image (its first row); images
    without a recorded hash (older manifests, files missing at import) are left out: they are not
    checked."""
    if "sha256" not in frame or not len(frame):
        return {}
    first = frame.drop_duplicates("image_id")
    return {
        image_id: sha
        for image_id, sha in zip(first["image_id"], first["sha256"], strict=True)
        if isinstance(sha, str) and sha
    }


def content_matches(actual: str | None, recorded: str | None) -> bool | None:
    """Whether an image file hashes (``actual``) to the sha256 the manifest ``recorded``; None
    when there is nothing to compare (no recorded hash, or the file could not be hashed)."""
    if not isinstance(actual, str) or not isinstance(recorded, str) or not recorded:
        return None
    return actual == recorded


def content_changed(actual: str, recorded: str) -> str:
    """The problem with an image whose bytes differ from the manifest's sha256, in plain words."""
    return (
        f"content changed since import: sha256 {actual[:16]}... but the manifest records "
        f"{recorded[:16]}..."
    )


def image_hash_problems(frame: pd.DataFrame) -> list[str]:
    """``path (image_id): problem`` for every image whose bytes differ from the manifest's sha256
    (images without a recorded hash are not checked; a missing file is a problem)."""
    recorded = recorded_sha256(frame)
    problems = []
    for image_id, path in images(frame)[["image_id", "path"]].itertuples(index=False):
        want = recorded.get(image_id)
        if want is None:
            continue
        if not Path(path).is_file():
            problems.append(f"{path} ({image_id}): image file not found")
            continue
        got = file_sha256(path)
        if not content_matches(got, want):
            problems.append(f"{path} ({image_id}): {content_changed(got, want)}")
    return problems


def shard_failure(index: str | os.PathLike[str], limit: int = 20) -> Failure | None:
    """The validate stage's ``shards_intact`` check over the shard folder of ``index``: a
    :class:`~babelrs_core.data.validation.report.Failure`, or None when every shard checks out."""
    from babelrs_core.data.shards import verify_shards

    index = Path(index)
    problems = verify_shards(index.parent, index)
    if not problems:
        return None
    return Failure(
        check="shards_intact",
        table="shards",
        expectation="shard index (babelrs_core.data.shards.verify_shards)",
        description="every shard is complete and its bytes match the shard index's sha256",
        count=len(problems),
        examples=problems[:limit],
    )


def shard_index_problems(frame: Any, index: str | os.PathLike[str]) -> list[str]:
    """What the shards lack against the manifest: images missing from the shard index, or whose
    packed bytes are not the ones the manifest recorded (sha256 of the index vs the manifest),
    and truncated shards -- the check when the stages read pixels from the shards."""
    from babelrs_core.data.shards import read_index, verify_shards

    index = Path(index)
    packed = read_index(index).set_index("image_id")["sha256"]
    recorded = recorded_sha256(frame)
    problems = []
    for image_id in images(frame)["image_id"]:
        if image_id not in packed.index:
            problems.append(f"{index} ({image_id}): image not in the shard index")
            continue
        want = recorded.get(image_id)
        if content_matches(packed[image_id], want) is False:
            problems.append(
                f"{index} ({image_id}): the shards hold other bytes: "
                f"{content_changed(packed[image_id], str(want))} (run `babelrs stage shard`)"
            )
    truncated = verify_shards(index.parent, index, sizes_only=True)
    return problems + [p for p in truncated if "truncated" in p]


def check_training_data(params: Any, manifest: str | os.PathLike[str] | None = None) -> None:
    """Before training: the pixels the stages will read are the bytes the manifest recorded at
    import -- the loose files (sha256) and no truncated shard of ``shards.index`` when there is
    one (``images.source: files``), or the shard index against the manifest and the shards'
    sizes (``images.source: shards``). Raises :class:`DataIntegrityError` naming each file and
    its problem."""
    from babelrs_core.data.shards import verify_shards

    manifest = Path(manifest or params.paths.manifest)
    frame = read_manifest(manifest)
    index = Path(params.shards.index)
    if params.images.source == "shards":
        problems = shard_index_problems(frame, index)
    else:
        problems = image_hash_problems(frame)
        if index.is_file():
            problems += [
                p for p in verify_shards(index.parent, index, sizes_only=True) if "truncated" in p
            ]
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataIntegrityError(
            f"{manifest}: {len(problems)} data file(s) changed or damaged since validation; "
            f"nothing was trained (run `babelrs stage validate` for the full report):\n"
            f"{shown}{more}"
        )
