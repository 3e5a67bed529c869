"""The DSB2018 (Kaggle "Spot Nuclei") training layout, read into (image, label image) pairs.

Layout (Kaggle Data Science Bowl 2018 data page,
https://www.kaggle.com/competitions/data-science-bowl-2018/data; Caicedo et al., Nature Methods
16, 1247-1253, 2019): ``<root>/<ImageId>/images/<ImageId>.png`` and
``<root>/<ImageId>/masks/*.png``, one binary mask per nucleus. Each mask becomes one label
(1..K, in sorted mask-file order) of an integer label image; 0 is background.

Annotation defects are reported per image, never hidden: a mask whose shape differs from the
image (skipped), an empty mask (skipped), a mask that overlaps earlier ones (the shared pixels
stay with the earlier mask), a mask made of several 8-connected pieces (kept as one label),
and a missing image (the whole item fails).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from ..errors import AnnotationError, ImageReadError
from .images import IMAGE_SUFFIXES, read_image


@dataclass
class Defect:
    """One annotation defect: ``kind`` in {'shape', 'empty', 'overlap', 'disconnected'}."""

    kind: str
    mask: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.mask} ({self.detail})"


@dataclass
class DSBItem:
    """One DSB2018 image with its label image and the defects found while building it.

    ``image`` (H, W[, C]) as stored; ``labels`` (H, W) uint16 (uint32 past 65535 nuclei).
    """

    image_id: str
    image: np.ndarray
    labels: np.ndarray
    defects: list[Defect] = field(default_factory=list)

    @property
    def n_nuclei(self) -> int:
        return int(len(np.unique(self.labels)) - (1 if (self.labels == 0).any() else 0))


def is_dsb2018_item(folder: Path) -> bool:
    """True when ``folder`` looks like ``<ImageId>/`` with ``images/<ImageId>.png`` inside."""
    return (folder / "images").is_dir()


def is_dsb2018_root(folder: Path) -> bool:
    """True when ``folder`` holds at least one DSB2018 item folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for child in folder.iterdir():
        if child.is_dir() and is_dsb2018_item(child):
            return True
    return False


def list_image_ids(root: str | os.PathLike) -> list[str]:
    """The ImageIds of a DSB2018 root folder, sorted."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_dsb2018_item(p))


def image_path(root: str | os.PathLike, image_id: str) -> Path:
    """Path of the image of ``image_id``: ``images/<ImageId>.png``, or the only image there."""
    folder = Path(root) / image_id / "images"
    path = folder / f"{image_id}.png"
    if path.is_file():
        return path
    candidates = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise ImageReadError(f"{folder}: missing image {image_id}.png")


def read_masks(root: str | os.PathLike, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, list[Defect]]:
    """Combine the masks of one DSB2018 item into a label image.

    Parameters
    ----------
    root : DSB2018 root folder.
    image_id : the item's ImageId.
    shape : (H, W) of the item's image, in pixels.

    Returns
    -------
    labels : (H, W) uint16 (uint32 if more than 65535 masks); mask i of the sorted mask files
        that is kept gets the next label 1, 2, ...
    defects : list of :class:`Defect`.

    Raises
    ------
    ImageReadError
        if a mask file cannot be read.
    """
    mask_dir = Path(root) / image_id / "masks"
    files = sorted(p for p in mask_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if mask_dir.is_dir() else []
    dtype = np.uint16 if len(files) <= 65535 else np.uint32
    labels = np.zeros(shape, dtype=dtype)
    defects: list[Defect] = []
    label = 0
    eight = np.ones((3, 3), dtype=bool)
    for path in files:
        mask = read_image(path)
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != tuple(shape):
            defects.append(Defect("shape", path.name, f"mask {mask.shape} vs image {tuple(shape)}; skipped"))
            continue
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            defects.append(Defect("empty", path.name, "no foreground pixel; skipped"))
            continue
        label += 1
        taken = labels[rows, cols] != 0
        if taken.any():
            others = np.unique(labels[rows, cols][taken])
            defects.append(
                Defect("overlap", path.name, f"{int(taken.sum())} px already in label(s) {others.tolist()}; kept there")
            )
            rows, cols = rows[~taken], cols[~taken]
        labels[rows, cols] = label
        r0, r1, c0, c1 = rows.min(initial=0), rows.max(initial=0), cols.min(initial=0), cols.max(initial=0)
        crop = mask[r0 : r1 + 1, c0 : c1 + 1] > 0
        n_pieces = ndimage.label(crop, structure=eight)[1]
        if n_pieces > 1:
            defects.append(Defect("disconnected", path.name, f"{n_pieces} separate pieces; kept as one label"))
    return labels, defects


def read_item(root: str | os.PathLike, image_id: str) -> DSBItem:
    """Read one DSB2018 item (image, label image, defects).

    Raises
    ------
    ImageReadError
        if the image is missing or unreadable, or a mask file is unreadable.
    """
    image = read_image(image_path(root, image_id))
    labels, defects = read_masks(root, image_id, image.shape[:2])
    return DSBItem(image_id, image, labels, defects)


def iter_dsb2018(root: str | os.PathLike, image_ids: list[str] | None = None) -> Iterator[DSBItem | Exception]:
    """Yield a :class:`DSBItem` per ImageId, or the exception that item raised (batch use).

    Raises
    ------
    AnnotationError
        if ``root`` is not a DSB2018 folder.
    """
    root = Path(root)
    if not is_dsb2018_root(root):
        raise AnnotationError(f"{root}: not a DSB2018 folder (expected <ImageId>/images/<ImageId>.png)")
    for image_id in image_ids if image_ids is not None else list_image_ids(root):
        try:
            yield read_item(root, image_id)
        except (ImageReadError, AnnotationError) as exc:
            yield exc
