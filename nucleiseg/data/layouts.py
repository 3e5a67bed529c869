"""Folders of images with their annotations, in the layouts labs use, read as one kind of object.

Layouts (:func:`open_collection` tells them apart, in this order):

- ``dsb2018``: ``<root>/<ImageId>/images/<ImageId>.png`` and ``<root>/<ImageId>/masks/*.png``,
  one binary mask per nucleus (Kaggle Data Science Bowl 2018; :mod:`~nucleiseg.data.dsb2018`);
- ``images+masks``: ``<root>/images/<name>.<ext>`` and a label image of the same name in
  ``<root>/masks/`` (or ``<root>/labels/``): 0 background, k > 0 nucleus k (the layout of
  StarDist's example data and of the bundled samples);
- ``cellpose``: ``<root>/<name>.<ext>`` beside its label image ``<root>/<name>_masks.<ext>``
  (Cellpose's training layout);
- ``aperio``: ``<root>/<name>.<ext>`` beside ``<root>/<name>.xml``, Aperio ImageScope polygons
  (MoNuSeg 2018; :mod:`~nucleiseg.data.aperio`);
- ``geojson``: ``<root>/<name>.<ext>`` beside ``<root>/<name>.geojson`` (or ``.json``), polygons
  as QuPath exports them (:mod:`nucleiseg.geojson`).

An ImageId is the DSB2018 folder name or the image's file stem. Every layout reports its
annotation defects per image (:class:`~nucleiseg.data.items.Defect`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import AnnotationError, ImageReadError, NucleisegError
from .dsb2018 import image_path, is_dsb2018_root, list_image_ids, read_masks
from .ids import check_image_id
from .images import IMAGE_SUFFIXES, read_image, read_label_image
from .items import Defect, LabeledItem

LAYOUTS = ("dsb2018", "images+masks", "cellpose", "aperio", "geojson")

#: Label-image file name ending of the Cellpose layout (after the image's stem).
CELLPOSE_MASKS = "_masks"

#: Folder names that hold the label images of the images+masks layout, in the order looked for.
MASK_FOLDERS = ("masks", "labels")


@dataclass
class Collection:
    """Labeled images in one of the :data:`LAYOUTS`.

    Attributes
    ----------
    root : Path
        The folder.
    layout : str
        One of :data:`LAYOUTS`.
    image_ids : list of str
        The ImageIds, sorted.
    image_path : callable
        ImageId -> image file (raises ImageReadError when the layout lacks it).
    annotation : callable
        (ImageId, (H, W) or None) -> (labels, defects): reads one image's annotation.
    needs_shape : bool
        Whether ``annotation`` needs the image's (H, W) (masks, polygons) or not (label images).
    """

    root: Path
    layout: str
    image_ids: list[str]
    image_path: Callable[[str], Path]
    annotation: Callable[[str, tuple[int, int] | None], tuple[np.ndarray, list[Defect]]]
    needs_shape: bool = False

    def ids(self) -> list[str]:
        """The ImageIds, sorted."""
        return list(self.image_ids)

    def labels(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The label image of ``image_id``: (H, W) uint16 (uint32 past 65535 nuclei). ``shape``
        saves reading the image where the annotation needs its size (masks, polygons)."""
        if shape is None and self.needs_shape:
            shape = read_image(self.image_path(image_id)).shape[:2]
        return self.annotation(image_id, shape)[0]

    def read(self, image_id: str) -> LabeledItem:
        """The image, its label image and the defects found while building it.

        Raises
        ------
        ImageReadError, AnnotationError
            if the image or its annotation cannot be read.
        """
        image = read_image(self.image_path(image_id))
        labels, defects = self.annotation(image_id, image.shape[:2])
        if labels.shape != image.shape[:2]:
            raise AnnotationError(f"{self.root}, {image_id}: label image {labels.shape} and image "
                                  f"{image.shape[:2]} differ in shape")
        return LabeledItem(image_id, image, labels, defects)

    def items(self, image_ids: list[str] | None = None) -> Iterator[LabeledItem | NucleisegError]:
        """:meth:`read` each ImageId (all by default), yielding the error instead for one that
        fails, so a batch goes on."""
        for image_id in image_ids if image_ids is not None else self.ids():
            try:
                yield self.read(image_id)
            except (ImageReadError, AnnotationError) as exc:
                yield exc


def _images_in(folder: Path) -> dict[str, Path]:
    """{stem: path} of the image files directly in ``folder`` (the first suffix found wins)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def _label_file(path: Path) -> tuple[np.ndarray, list[Defect]]:
    return read_label_image(path), []


def _from_files(root: Path, layout: str, images: dict[str, Path], annotation) -> Collection:
    """A collection whose images are the files of ``images`` ({ImageId: path})."""
    ids = sorted(check_image_id(k) for k in images)
    return Collection(root, layout, ids, images.__getitem__, annotation)


def _images_and_masks(root: Path) -> Collection | None:
    if not (root / "images").is_dir():
        return None
    images = _images_in(root / "images")
    for name in MASK_FOLDERS:
        if (root / name).is_dir():
            masks = _images_in(root / name)
            common = {k: v for k, v in images.items() if k in masks}
            if common:
                return _from_files(root, "images+masks", common,
                                   lambda image_id, shape, masks=masks: _label_file(masks[image_id]))
    return None


def _cellpose(root: Path, files: dict[str, Path]) -> Collection | None:
    masks = {k[: -len(CELLPOSE_MASKS)]: v for k, v in files.items() if k.endswith(CELLPOSE_MASKS)}
    images = {k: v for k, v in files.items() if k in masks}
    if not images:
        return None
    return _from_files(root, "cellpose", images, lambda image_id, shape: _label_file(masks[image_id]))


def _aperio(root: Path, files: dict[str, Path]) -> Collection | None:
    from .aperio import read_aperio_xml

    images = {k: v for k, v in files.items() if (root / f"{k}.xml").is_file()}
    if not images:
        return None
    found = _from_files(root, "aperio", images,
                        lambda image_id, shape: read_aperio_xml(root / f"{image_id}.xml", shape))
    found.needs_shape = True
    return found


def _geojson(root: Path, files: dict[str, Path]) -> Collection | None:
    from ..geojson import GEOJSON_SUFFIXES, read_geojson

    found = {k: next((root / f"{k}{s}" for s in GEOJSON_SUFFIXES if (root / f"{k}{s}").is_file()), None)
             for k in files}
    annotations = {k: v for k, v in found.items() if v is not None}
    if not annotations:
        return None
    images = {k: files[k] for k in annotations}
    collection = _from_files(root, "geojson", images,
                             lambda image_id, shape: read_geojson(annotations[image_id], shape))
    collection.needs_shape = True
    return collection


def open_collection(path: str | os.PathLike) -> Collection | None:
    """The :class:`Collection` in folder ``path``, or None when it holds none of the
    :data:`LAYOUTS` (e.g. a flat folder of images without annotations)."""
    root = Path(path)
    if not root.is_dir():
        return None
    if is_dsb2018_root(root):
        return Collection(root, "dsb2018", list_image_ids(root), lambda image_id: image_path(root, image_id),
                          lambda image_id, shape: read_masks(root, image_id, shape), needs_shape=True)
    found = _images_and_masks(root)
    if found is None:
        files = _images_in(root)
        found = _cellpose(root, files) or _aperio(root, files) or _geojson(root, files)
    return found


def require_collection(path: str | os.PathLike) -> Collection:
    """:func:`open_collection`, raising a one-line error naming the layouts when there is none.

    Raises
    ------
    AnnotationError
        if ``path`` is not a folder in one of the :data:`LAYOUTS`.
    """
    found = open_collection(path)
    if found is None:
        raise AnnotationError(f"{path}: no labeled images found; expected one of these layouts: DSB2018 "
                              "(<id>/images/<id>.png + <id>/masks/*.png), images/ + masks/ (same file names), "
                              "Cellpose (<name>.tif + <name>_masks.tif), Aperio XML (<name>.tif + <name>.xml), or GeoJSON "
                              "(<name>.tif + <name>.geojson, as QuPath exports)")
    return found
