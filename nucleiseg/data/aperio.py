"""Aperio ImageScope XML annotations (the format of MoNuSeg 2018) rasterised to label images.

Format (Aperio ImageScope / Leica annotation XML, as distributed with MoNuSeg: Kumar et al., IEEE
TMI 36(7), 2017): ``<Annotations><Annotation><Regions><Region Id=..>`` with one
``<Vertices><Vertex X=".." Y=".."/>...`` polygon per nucleus; X is the column and Y the row, in
pixels, with pixel (r, c) centred on (X, Y) = (c, r). MoNuSeg traces each nucleus's contour
through the centres of its boundary pixels.

Rasterisation rule: a pixel belongs to a region when its centre lies inside the polygon or on
its outline (``skimage.draw.polygon`` plus ``skimage.draw.polygon_perimeter``), so the traced
boundary pixels belong to the nucleus. Regions are added in file order; a pixel two regions
share stays with the earlier one (the rule of the DSB2018 reader,
:class:`~nucleiseg.data.items.LabelBuilder`). Reported per image, never hidden: 'degenerate'
regions (fewer than 3 distinct corners, or no area; skipped), 'outside' (corners outside the
image; the polygon is clipped to it), 'empty' (no pixel centre inside), 'overlap' and
'disconnected'.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from ..errors import AnnotationError
from .items import Defect, LabelBuilder


def read_polygons(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """The regions of an ImageScope XML file: (name, (K, 2) float64 array of (row, col) corners).

    ``name`` is "region <Id>" (or "region #<n>" without an Id), for defect reports.

    Raises
    ------
    AnnotationError
        if the file is missing, not XML, or holds a vertex whose X or Y is not a number.
    """
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise AnnotationError(f"{path}: not a readable ImageScope XML file ({exc})") from None
    regions = []
    for n, region in enumerate(root.iter("Region"), start=1):
        name = f"region {region.get('Id')}" if region.get("Id") is not None else f"region #{n}"
        try:
            corners = [(float(v.get("Y")), float(v.get("X"))) for v in region.iter("Vertex")]
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}, {name}: a vertex without numeric X and Y") from None
        regions.append((name, np.asarray(corners, np.float64).reshape(-1, 2)))
    return regions


def _polygon_pixels(corners: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centre is inside or on the polygon, clipped to ``shape``."""
    from skimage.draw import polygon, polygon_perimeter

    r0, c0 = np.floor(corners.min(axis=0)).astype(int)
    local = corners - (r0, c0)
    box = tuple(np.ceil(local.max(axis=0)).astype(int) + 1)
    inside = np.zeros(box, bool)
    inside[polygon(local[:, 0], local[:, 1], box)] = True
    inside[polygon_perimeter(np.round(local[:, 0]), np.round(local[:, 1]), box)] = True
    rows, cols = np.nonzero(inside)
    rows, cols = rows + r0, cols + c0
    keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows[keep], cols[keep]


def _area(corners: np.ndarray) -> float:
    """Polygon area (shoelace), pixels squared."""
    r, c = corners[:, 0], corners[:, 1]
    return 0.5 * abs(float(np.dot(r, np.roll(c, 1)) - np.dot(c, np.roll(r, 1))))


def read_aperio_xml(path: str | os.PathLike, shape: tuple[int, int]) -> tuple[np.ndarray, list[Defect]]:
    """Rasterise the regions of an ImageScope XML file into a label image (see the module docstring).

    Parameters
    ----------
    path : the XML file.
    shape : (H, W) of its image, in pixels.

    Returns
    -------
    labels : (H, W) uint16 (uint32 past 65535 regions); kept regions get labels 1, 2, ... in file
        order.
    defects : list of :class:`~nucleiseg.data.items.Defect`.

    Raises
    ------
    AnnotationError
        if the file cannot be read as ImageScope XML.
    """
    regions = read_polygons(path)
    built = LabelBuilder(tuple(shape), len(regions))
    for name, corners in regions:
        if len(np.unique(corners, axis=0)) < 3 or _area(corners) == 0:
            built.defects.append(Defect("degenerate", name, f"{len(corners)} corners, area "
                                                            f"{_area(corners):g} px; skipped"))
            continue
        outside = (corners[:, 0] < 0) | (corners[:, 0] > shape[0] - 1) | (corners[:, 1] < 0) | (corners[:, 1] > shape[1] - 1)
        if outside.any():
            built.defects.append(Defect("outside", name, f"{int(outside.sum())} of {len(corners)} corners outside "
                                                         f"the {shape[0]}x{shape[1]} image; clipped"))
        built.add(*_polygon_pixels(corners, shape), name)
    return built.labels, built.defects
