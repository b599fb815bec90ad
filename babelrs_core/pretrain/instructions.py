"""CSIA instruction templates built from detection labels (one module, every modality alike).

Tasks (docs/pretraining.md): ``region`` classification of a box, ``count`` of a class, ``presence``
of a class, ``listing`` all objects, and ``caption`` (SOI-mini's scene-graph captions). Answers use
the plain-language concepts of :mod:`babelrs_core.concepts`, so a SAR "car" and a DOTA
"small-vehicle" both answer "A car." Boxes are written InternVL style: ``<box>[x1,y1,x2,y2]</box>``
with integer coordinates normalised to 0..1000 of the image width / height.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from babelrs_core.concepts import class_info, dataset
from babelrs_core.english import number_word, with_article

TASKS: tuple[str, ...] = ("region", "count", "presence", "listing", "caption")


@dataclass(frozen=True)
class Box:
    """One labelled object: canonical class of its dataset and a horizontal box in pixels."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class ImageLabels:
    """What the builders need to know about one image."""

    image_id: str
    dataset: str
    modality: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    caption: str | None = None


@dataclass(frozen=True)
class Instruction:
    """One (question, answer) pair about one image."""

    image_id: str
    dataset: str
    modality: str
    task: str
    question: str
    answer: str
    box: tuple[float, float, float, float] | None = None  # region task: x1 y1 x2 y2 in 0..1


def sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def unit_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` as x1 y1 x2 y2 fractions of the image, clamped to 0..1."""
    unit = (box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height)
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in unit)
    return x1, y1, x2, y2


def unit_box_text(unit: Sequence[float]) -> str:
    """``<box>[x1,y1,x2,y2]</box>`` with integer coordinates in 0..1000 (InternVL)."""
    return "<box>[" + ",".join(str(round(v * 1000)) for v in unit) + "]</box>"


def box_text(box: Box, width: int, height: int) -> str:
    """``<box>[x1,y1,x2,y2]</box>`` of a pixel box, normalised to 0..1000."""
    return unit_box_text(unit_box(box, width, height))


def flip_unit(unit: Sequence[float], hflip: bool, vflip: bool) -> tuple[float, float, float, float]:
    """A 0..1 box after flipping the image left-right and / or top-bottom."""
    x1, y1, x2, y2 = unit
    if hflip:
        x1, x2 = 1.0 - x2, 1.0 - x1
    if vflip:
        y1, y2 = 1.0 - y2, 1.0 - y1
    return (x1, y1, x2, y2)


_BOX_RE = re.compile(r"<box>\[[^\]]*\]</box>")


def flipped(ins: Instruction, hflip: bool, vflip: bool) -> Instruction:
    """The instruction about the flipped image: box and its text follow the flip; the other tasks
    (counts, presence, listing, captions without directions) are flip-invariant."""
    if ins.box is None or not (hflip or vflip):
        return ins
    box = flip_unit(ins.box, hflip, vflip)
    question = _BOX_RE.sub(lambda _: unit_box_text(box), ins.question, count=1)
    return replace(ins, question=question, box=box)


def concept_of(ds: str, class_name: str) -> str:
    return class_info(ds, class_name).concept


def plural_of(ds: str, class_name: str) -> str:
    return class_info(ds, class_name).plural


def count_phrase(ds: str, class_name: str, n: int) -> str:
    """``a ship`` / ``two ships`` / ``no ships``."""
    if n == 1:
        return with_article(concept_of(ds, class_name))
    return f"{'no' if n == 0 else number_word(n)} {plural_of(ds, class_name)}"


def class_list(ds: str, classes: Sequence[str]) -> str:
    return ", ".join(concept_of(ds, c) for c in classes)


def ordered_classes(ds: str, classes: Sequence[str]) -> list[str]:
    """``classes`` in the dataset's canonical order, without duplicates."""
    order = dataset(ds).class_names
    return sorted(set(classes), key=order.index)


def region(img: ImageLabels, box: Box, classes: Sequence[str]) -> Instruction:
    """ "What is the object in <box>[..]</box>? The classes are: ..." -> "A ship." """
    unit = unit_box(box, img.width, img.height)
    q = (
        f"What is the object in {unit_box_text(unit)}? "
        f"The classes are: {class_list(img.dataset, classes)}."
    )
    a = sentence(with_article(concept_of(img.dataset, box.class_name)))
    return Instruction(img.image_id, img.dataset, img.modality, "region", q, a, unit)


def count(img: ImageLabels, class_name: str) -> Instruction:
    """ "How many ships are there in this image?" -> "Three." """
    n = sum(b.class_name == class_name for b in img.boxes)
    q = f"How many {plural_of(img.dataset, class_name)} are there in this image?"
    return Instruction(
        img.image_id, img.dataset, img.modality, "count", q, sentence(number_word(n))
    )


def presence(img: ImageLabels, class_name: str) -> Instruction:
    """ "Is there a ship in this image?" -> "Yes." / "No." """
    yes = any(b.class_name == class_name for b in img.boxes)
    q = f"Is there {with_article(concept_of(img.dataset, class_name))} in this image?"
    return Instruction(
        img.image_id, img.dataset, img.modality, "presence", q, "Yes." if yes else "No."
    )


def listing(img: ImageLabels) -> Instruction:
    """ "List all objects in this image." -> "Two ships and a car." (most frequent first)."""
    counts = Counter(b.class_name for b in img.boxes)
    order = dataset(img.dataset).class_names
    items = sorted(counts, key=lambda c: (-counts[c], order.index(c)))
    parts = [count_phrase(img.dataset, c, counts[c]) for c in items]
    if not parts:
        text = "there are no objects"
    elif len(parts) == 1:
        text = parts[0]
    else:
        text = ", ".join(parts[:-1]) + " and " + parts[-1]
    q = "List all objects in this image."
    return Instruction(img.image_id, img.dataset, img.modality, "listing", q, sentence(text))


def caption(img: ImageLabels) -> Instruction | None:
    """ "Describe this image." -> the scene-graph caption (SOI-mini only)."""
    if not img.caption:
        return None
    q = "Describe this image."
    return Instruction(img.image_id, img.dataset, img.modality, "caption", q, sentence(img.caption))


def build_instructions(
    img: ImageLabels, classes: Sequence[str], seed: int = 0
) -> list[Instruction]:
    """All instructions for one image: one region prompt per box, count and presence for the
    classes present plus one absent class, the listing and (if any) the caption.

    ``classes`` is the dataset's class list offered in region prompts (canonical names); the absent
    class is drawn with a generator seeded from ``seed`` and the image id (reproducible).
    """
    classes = ordered_classes(img.dataset, classes)
    rng = random.Random(f"{seed}:{img.image_id}")
    present = ordered_classes(img.dataset, [b.class_name for b in img.boxes])
    absent = [c for c in classes if c not in present]
    out = [region(img, b, classes) for b in img.boxes]
    probe = present + ([rng.choice(absent)] if absent else [])
    out += [count(img, c) for c in probe]
    out += [presence(img, c) for c in probe]
    out.append(listing(img))
    cap = caption(img)
    if cap is not None:
        out.append(cap)
    return out


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and extra blanks removed (for exact-match scoring)."""
    kept = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text.lower())
    return " ".join(kept.split())
