"""Aperio ImageScope XML annotations (the format of MoNuSeg 2018) rasterised to label images.

Format (Aperio ImageScope / Leica annotation XML, as distributed with MoNuSeg: Kumar et al., IEEE
TMI 36(7), 2017): ``<Annotations><Annotation><Regions><Region Id=..>`` with one
``<Vertices><Vertex X=".." Y=".."/>...`` polygon per nucleus; X is the column and Y the row, in
pixels.

Rasterisation rule: the MoNuSeg organisers' own conversion, ``he_to_binary_mask_final.m``
(distributed with the dataset, Kumar et al. 2017), which made the challenge's ground truth: each
region goes through MATLAB's ``poly2mask(X, Y, rows, cols)`` with the XML coordinates as they
are, so (X, Y) are MATLAB's 1-based pixel coordinates (pixel (r, c), counted from 0, is centred
on (X, Y) = (c + 1, r + 1): :data:`VERTEX_ORIGIN`), and a pixel belongs to a region when its
centre lies inside the polygon, after poly2mask's move of the corners to a 5 x 5 sub-pixel grid
(:func:`_polygon_pixels`). Read this way the 6,697 MoNuSeg test nuclei cover their polygons' own
area (415 px on average against 413 px), as the training masks distributed as label images
(397 px) suggest; adding the outline pixels, as nucleiseg once did, made them 10 % larger.
Regions are added in file order; a pixel two regions share stays with the earlier one (as in
the organisers' code, ``binary_mask + zz * (1 - min(1, binary_mask)) .* polygon``, and the
DSB2018 reader, :class:`~nucleiseg.data.items.LabelBuilder`). Reported per image, never
hidden: 'degenerate' regions (fewer than 3 distinct corners, or no area; skipped), 'outside'
(corners outside the image; the polygon is clipped to it), 'empty' (no pixel centre inside),
'overlap' and 'disconnected'.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from ..errors import AnnotationError
from .items import Defect, LabelBuilder

#: The pixel coordinate of the first pixel's centre in the XML: 1, MATLAB's convention, which the
#: MoNuSeg organisers' conversion (``poly2mask`` on the raw vertex coordinates) assumes.
VERTEX_ORIGIN = 1.0


def read_polygons(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """The regions of an ImageScope XML file: (name, (K, 2) float64 array of (row, col) corners).

    Corners are in pixels, counted from 0 at the first pixel's centre (the file's X and Y minus
    :data:`VERTEX_ORIGIN`), the coordinates of NumPy indices and ``skimage.draw``.

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
            corners = [(float(v.get("Y")) - VERTEX_ORIGIN, float(v.get("X")) - VERTEX_ORIGIN)
                       for v in region.iter("Vertex")]
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}, {name}: a vertex without numeric X and Y") from None
        regions.append((name, np.asarray(corners, np.float64).reshape(-1, 2)))
    return regions


def _polygon_pixels(corners: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels inside the polygon by MATLAB's ``poly2mask`` rule, clipped to ``shape``.

    poly2mask moves each corner to the nearest corner of a 5 x 5 sub-pixel grid (coordinates
    c +- 0.1, 0.3, 0.5 around each pixel centre c; a tie goes up) and takes the pixels whose
    centre lies inside the moved polygon; no centre can then lie on a horizontal or vertical
    edge, so an edge through pixel centres keeps the pixels below / right of it and drops those
    above / left (poly2mask's documented example: corners 4 and 10 keep pixels 5..10). Source:
    MathWorks, poly2mask reference page, "Algorithm"; S. Eddins, "POLY2MASK and ROIPOLY", 2006.
    """
    from skimage.draw import polygon

    snapped = (2 * np.floor(5 * corners) + 1) / 10
    return polygon(snapped[:, 0], snapped[:, 1], shape)


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
        # the image covers -0.5 .. H - 0.5 (pixel centres 0 .. H - 1)
        outside = ((corners < -0.5) | (corners > np.array(shape) - 0.5)).any(axis=1)
        if outside.any():
            built.defects.append(Defect("outside", name, f"{int(outside.sum())} of {len(corners)} corners outside "
                                                         f"the {shape[0]}x{shape[1]} image; clipped"))
        built.add(*_polygon_pixels(corners, shape), name)
    return built.labels, built.defects
