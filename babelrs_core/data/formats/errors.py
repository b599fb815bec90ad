"""Problems that the format readers find in annotation files.

Two kinds:

* :class:`FormatError`: the file is broken (bad syntax, unknown class, missing image, size
  mismatch). The import stops; ``str(err)`` reads like a compiler message, ``path:line: message``,
  so that editors and terminals can jump to the spot.
* :class:`Dropped`: one object that is valid but deliberately not imported (DroneVehicle's ``*``,
  degenerate or out-of-image boxes), or a split that is skipped. Readers report them through an
  ``on_drop`` callback and the importer counts them per reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from babelrs_core.errors import BadInputError

#: Reasons for :class:`Dropped` (the importer's report groups by them).
IGNORED_CLASS = "ignored class"
TOO_SMALL = "box smaller than min_box_size_px"
ZERO_AREA = "zero area"
OUTSIDE_IMAGE = "no overlap with the image"
IN_BORDER = "wholly inside the white border"
UNLABELLED_SPLIT = "split has images but no label folder"


class FormatError(BadInputError):
    """An annotation file (or the image it points to) does not follow its dataset's format.

    ``line`` is a 1-based text line for text formats (DOTA, XML, JSON syntax errors) and the array
    index for COCO JSON entries (``annotations[i]``); ``None`` when no position applies.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.message}"

    def __reduce__(self):  # keep pickling (multiprocessing) working with the 3-arg constructor
        return (type(self), (self.path, self.line, self.message))


@dataclass(frozen=True)
class Dropped:
    """One object (or one split) that a reader skipped on purpose, and why."""

    dataset: str
    modality: str
    split: str
    file: str
    line: int | None
    reason: str
    raw_class: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        cls = f" [{self.raw_class}]" if self.raw_class is not None else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{where}: dropped{cls}: {self.reason}{extra}"


DropSink = Callable[[Dropped], None]


def ignore_drop(_: Dropped) -> None:
    """The default sink: forget the drop (the importer passes a counting one)."""
