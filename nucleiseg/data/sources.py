"""Where images and label images come from: files, flat folders, DSB2018 folders, Kaggle CSVs.

ImageIds are file stems (flat folders, files) or the DSB2018 folder names. An ImageId that could
escape an output folder (path separators, '..', absolute paths) is rejected.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import NucleisegError
from ..io import is_side_output
from .dsb2018 import image_path, is_dsb2018_root, list_image_ids, read_masks
from .ids import check_image_id
from .images import IMAGE_SUFFIXES, read_image, read_label_image
from .rle import decode_labels, read_csv_rles


def bundled_samples_dir() -> Path:
    """Folder of the bundled sample data: ``images/<ImageId>.png`` and ``labels/<ImageId>.tif``."""
    return Path(str(resources.files("nucleiseg").joinpath("samples")))


def iter_image_paths(inputs: list[Path]) -> Iterator[tuple[str, Path]]:
    """(ImageId, image path) for each input: an image file, a flat folder of images, or a
    DSB2018 folder (``<ImageId>/images/<ImageId>.png``), in sorted order within a folder.

    Raises
    ------
    NucleisegError
        for an input that does not exist or holds no image.
    """
    for path in inputs:
        path = Path(path)
        if path.is_file():
            yield check_image_id(path.stem), path
        elif is_dsb2018_root(path):
            for image_id in list_image_ids(path):
                yield image_id, Path(path) / image_id / "images" / f"{image_id}.png"
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise NucleisegError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            for p in files:
                yield check_image_id(p.stem), p
        else:
            raise NucleisegError(f"{path}: no such file or folder")


class LabelSource:
    """Label images by ImageId from a DSB2018 folder, a Kaggle CSV or a folder of label images.

    ``ids()`` lists the ImageIds; ``get(image_id, shape=None)`` reads one (H, W) label image;
    ``shape`` is needed for a submission CSV without Height/Width. Raises NucleisegError.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_file() and self.path.suffix.lower() == ".csv":
            self.kind = "csv"
            self._rles = read_csv_rles(self.path)
            self._ids = sorted(self._rles)
        elif is_dsb2018_root(self.path):
            self.kind = "dsb2018"
            self._ids = list_image_ids(self.path)
        elif self.path.is_dir():
            self.kind = "folder"
            self._files = {}
            for p in sorted(self.path.iterdir()):
                if p.is_file() and p.suffix.lower() in (".tif", ".tiff", ".png") and not is_side_output(p.name):
                    self._files.setdefault(p.stem, p)
            self._ids = sorted(self._files)
        else:
            raise NucleisegError(f"{self.path}: not a CSV, a DSB2018 folder or a folder of label images")

    def ids(self) -> list[str]:
        return list(self._ids)

    def shape(self, image_id: str) -> tuple[int, int] | None:
        """The (H, W) of ``image_id`` when known without decoding labels."""
        if self.kind == "csv":
            return self._rles[image_id]["shape"]
        if self.kind == "dsb2018":
            return read_image(image_path(self.path, image_id)).shape[:2]
        return None

    def get(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        if self.kind == "csv":
            entry = self._rles[image_id]
            shape = entry["shape"] or shape
            if shape is None:
                raise NucleisegError(f"{self.path}: size of {image_id} unknown (no Height/Width columns)")
            return decode_labels(entry["rles"], shape, f"{self.path}, {image_id}")
        if self.kind == "dsb2018":
            shape = read_image(image_path(self.path, image_id)).shape[:2]
            return read_masks(self.path, image_id, shape)[0]
        return read_label_image(self._files[image_id])
