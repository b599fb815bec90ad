"""Readers for the real on-disk formats of the SOI-Det datasets, one module per format.

* ``sardet``: :mod:`babelrs_core.data.formats.sardet`, SARDet-100K COCO JSON (SAR, hbox);
* ``dota``: :mod:`babelrs_core.data.formats.dota`, DOTA v1.0 labelTxt (RGB, obox);
* ``dronevehicle``: :mod:`babelrs_core.data.formats.dronevehicle`, DroneVehicle XML (IR/RGB, obox).

Every reader has the same signature (:class:`Reader`)::

    read(root, params, splits=None, on_drop=ignore_drop) -> Iterator[ManifestRow]

``root`` is the dataset folder in its release layout, ``params`` the ``importers`` section of
``params.yaml``; ``splits=None`` reads every split found on disk. Rows carry absolute image paths
and ``image_id = "{dataset}/{split}/{stem}"``. A broken file raises :class:`FormatError`
(``path:line: message``); objects skipped on purpose are passed to ``on_drop`` as
:class:`Dropped`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from babelrs_core.config import Importers
from babelrs_core.data.formats import dota, dronevehicle, sardet
from babelrs_core.data.formats.errors import Dropped, DropSink, FormatError, ignore_drop
from babelrs_core.data.manifest import ManifestRow


class Reader(Protocol):
    """The signature every format reader implements."""

    def __call__(
        self,
        root: Path,
        params: Importers,
        splits: Sequence[str] | None = None,
        on_drop: DropSink = ignore_drop,
    ) -> Iterator[ManifestRow]: ...


#: Dataset name -> reader of its release format.
READERS: dict[str, Reader] = {
    "sardet": sardet.read,
    "dota": dota.read,
    "dronevehicle": dronevehicle.read,
}


def get_reader(name: str) -> Reader:
    """The reader of dataset ``name``; a clear error lists the known ones."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"no reader for dataset {name!r}; known: {', '.join(READERS)}") from None


__all__ = [
    "READERS",
    "DropSink",
    "Dropped",
    "FormatError",
    "Reader",
    "get_reader",
    "ignore_drop",
]
