"""Where images and label images come from: files, flat folders, labeled collections, Kaggle CSVs.

ImageIds are file stems (flat folders, files) or a collection's ImageIds
(:mod:`~nucleiseg.data.layouts`: DSB2018 folder names, or the image file stems of the other
layouts). An ImageId that could escape an output folder (path separators, '..', absolute paths)
is rejected.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import NucleisegError
from ..io import is_side_output
from .ids import check_image_id
from .images import IMAGE_SUFFIXES, read_label_image
from .layouts import CELLPOSE_MASKS, open_collection
from .rle import decode_labels, read_csv_rles

#: Endings of label-image file stems that are dropped to find their ImageId: Cellpose's training
#: masks and its predictions (``cellpose --save_png`` writes ``<name>_cp_masks.png``).
LABEL_STEM_SUFFIXES = ("_cp" + CELLPOSE_MASKS, CELLPOSE_MASKS)


def bundled_samples_dir() -> Path:
    """Folder of the bundled sample data: ``images/<ImageId>.png`` and ``labels/<ImageId>.tif``."""
    return Path(str(resources.files("nucleiseg").joinpath("samples")))


def iter_image_paths(inputs: list[Path]) -> Iterator[tuple[str, Path]]:
    """(ImageId, image path) for each input: an image file, a labeled collection (its images:
    see :mod:`~nucleiseg.data.layouts`), or a flat folder of images, in sorted order within a
    folder.

    Raises
    ------
    NucleisegError
        for an input that does not exist or holds no image.
    """
    for path in inputs:
        path = Path(path)
        if path.is_file():
            yield check_image_id(path.stem), path
        elif path.is_dir():
            collection = open_collection(path)
            if collection is not None:
                for image_id in collection.ids():
                    yield image_id, _expected_image_path(collection, image_id)
                continue
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise NucleisegError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            for p in files:
                yield check_image_id(p.stem), p
        else:
            raise NucleisegError(f"{path}: no such file or folder")


def _expected_image_path(collection, image_id: str) -> Path:
    """The image path, or where it should be when the layout lacks it (reading it then reports
    the missing file for that image alone)."""
    try:
        return collection.image_path(image_id)
    except NucleisegError:
        return collection.root / image_id / "images" / f"{image_id}.png"


def _label_stem(stem: str) -> str:
    for suffix in LABEL_STEM_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


class LabelSource:
    """Label images by ImageId from a labeled collection (any layout of
    :mod:`~nucleiseg.data.layouts`), a Kaggle CSV or a folder of label images (``<ImageId>.tif``
    or ``.png``; Cellpose's ``<ImageId>_masks`` and ``<ImageId>_cp_masks`` too).

    ``ids()`` lists the ImageIds; ``get(image_id, shape=None)`` reads one (H, W) label image;
    ``shape`` is needed for a submission CSV without Height/Width. Raises NucleisegError.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.collection = None
        if self.path.is_file() and self.path.suffix.lower() == ".csv":
            self.kind = "csv"
            self._rles = read_csv_rles(self.path)
            self._ids = sorted(self._rles)
        elif (collection := open_collection(self.path)) is not None:
            self.kind = collection.layout
            self.collection = collection
            self._ids = collection.ids()
        elif self.path.is_dir():
            self.kind = "folder"
            self._files = {}
            for p in sorted(self.path.iterdir()):
                if p.is_file() and p.suffix.lower() in (".tif", ".tiff", ".png") and not is_side_output(p.name):
                    self._files.setdefault(check_image_id(_label_stem(p.stem)), p)
            self._ids = sorted(self._files)
        else:
            raise NucleisegError(f"{self.path}: not a CSV, a labeled collection or a folder of label images")

    def ids(self) -> list[str]:
        return list(self._ids)

    def get(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        if self.kind == "csv":
            entry = self._rles[image_id]
            shape = entry["shape"] or shape
            if shape is None:
                raise NucleisegError(f"{self.path}: size of {image_id} unknown (no Height/Width columns)")
            return decode_labels(entry["rles"], shape, f"{self.path}, {image_id}")
        if self.collection is not None:
            return self.collection.labels(image_id)
        return read_label_image(self._files[image_id])
