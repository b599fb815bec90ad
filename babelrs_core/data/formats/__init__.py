"""Readers for the real on-disk formats of the SOI-Det datasets, one module per format.

* ``sardet``: :mod:`babelrs_core.data.formats.sardet`, SARDet-100K COCO JSON (SAR, hbox);
* ``dota``: :mod:`babelrs_core.data.formats.dota`, DOTA v1.0 labelTxt (RGB, obox);
* ``dronevehicle``: :mod:`babelrs_core.data.formats.dronevehicle`, DroneVehicle XML (IR/RGB, obox).

Every reader is a :class:`FormatReader`, called with the same signature::

    read(root, params, splits=None, on_drop=ignore_drop) -> Iterator[ManifestRow]

``root`` is the dataset folder in its release layout, ``params`` the ``importers`` section of
``params.yaml``; ``splits=None`` reads every split found on disk. Rows carry absolute image paths
and ``image_id = "{dataset}/{split}/{stem}"``. A broken file raises :class:`FormatError`
(``path:line: message``); objects skipped on purpose are passed to ``on_drop`` as
:class:`Dropped`.
"""

from __future__ import annotations

from typing import Any

from babelrs_core.data.formats import dota, dronevehicle, sardet
from babelrs_core.data.formats._common import FormatReader, Release
from babelrs_core.data.formats.errors import Dropped, DropSink, FormatError, ignore_drop

#: Dataset name -> reader of its release format.
READERS: dict[str, FormatReader[Any]] = {
    "sardet": sardet.read,
    "dota": dota.read,
    "dronevehicle": dronevehicle.read,
}


def get_reader(name: str) -> FormatReader[Any]:
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
    "FormatReader",
    "Release",
    "get_reader",
    "ignore_drop",
]
