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
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import AnnotationError, ImageReadError
from .images import IMAGE_SUFFIXES, read_image
from .items import Defect, LabelBuilder, LabeledItem


#: The record :func:`read_item` returns (one labeled image of any layout).
DSBItem = LabeledItem


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
    built = LabelBuilder(tuple(shape), len(files))
    for path in files:
        mask = read_image(path)
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != tuple(shape):
            built.defects.append(Defect("shape", path.name, f"mask {mask.shape} vs image {tuple(shape)}; skipped"))
            continue
        built.add(*np.nonzero(mask), path.name)
    return built.labels, built.defects


def read_item(root: str | os.PathLike, image_id: str) -> LabeledItem:
    """Read one DSB2018 item (image, label image, defects).

    Raises
    ------
    ImageReadError
        if the image is missing or unreadable, or a mask file is unreadable.
    """
    image = read_image(image_path(root, image_id))
    labels, defects = read_masks(root, image_id, image.shape[:2])
    return LabeledItem(image_id, image, labels, defects)


def iter_dsb2018(root: str | os.PathLike, image_ids: list[str] | None = None) -> Iterator[LabeledItem | Exception]:
    """Yield a :class:`~nucleiseg.data.items.LabeledItem` per ImageId, or the exception that item raised (batch use).

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
