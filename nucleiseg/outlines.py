"""Outlines of every nucleus of a label image in one numba pass: the rings that marching squares
(Lorensen & Cline 1987; ``skimage.measure.find_contours`` at level 0.5 with its default
``fully_connected="low"``) traces around each label's binary mask, without a mask, a padded copy
or a Python-level contour assembly per nucleus.

On a binary mask at level 0.5 every contour point is the midpoint of a pixel-centre grid edge
whose two pixels differ, so the rings are exact in half pixels and are traced here in doubled
integer coordinates. Each cell of four pixel centres contributes the segments of its case; in the
two saddle cases the nucleus's pixels are face-connected only (find_contours' "low": the
background is the fully connected set), so each foreground corner is cut off by its own segment.
Segments are directed with the nucleus on one side (exteriors counter-clockwise in (x, y) =
(column, row), the orientation of :mod:`nucleiseg.geojson`, holes clockwise) and chained into
rings; corners where the direction does not change are dropped. The same rings as find_contours,
up to the starting point (tests/test_geojson.py checks this on real label images).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit


class LabelRings(NamedTuple):
    """Rings of a label image (:func:`label_rings`).

    Attributes
    ----------
    points : (P, 2) float64, (x, y) = (column, row) pixel-corner coordinates of every ring's
        corners, ring after ring; each ring's first corner is repeated at its end.
    starts : (R + 1,) int64, ring i is ``points[starts[i]:starts[i + 1]]``.
    labels : (R,) int64, the label each ring outlines, in increasing order.
    exterior : (R,) bool, True for an exterior (counter-clockwise), False for a hole.
    boxes : ``scipy.ndimage.find_objects`` of the label image (entry l - 1: label l's box, or None).
    """

    points: np.ndarray
    starts: np.ndarray
    labels: np.ndarray
    exterior: np.ndarray
    boxes: list


@njit(cache=True, inline="always")
def _inside(labels, label, r, c) -> bool:
    return 0 <= r < labels.shape[0] and 0 <= c < labels.shape[1] and labels[r, c] == label


@njit(cache=True, inline="always")
def _point(p, n_h, w):
    """Doubled (row, col) in the padded box of point id ``p``: horizontal-edge midpoints
    (i, j + 1/2) first, i in 0..h+1, j in 0..w, then vertical-edge midpoints (i + 1/2, j), i in
    0..h, j in 0..w+1."""
    if p < n_h:
        return 2 * (p // (w + 1)), 2 * (p % (w + 1)) + 1
    q = p - n_h
    return 2 * (q // (w + 2)) + 1, 2 * (q % (w + 2))


@njit(cache=True, inline="always")
def _link(after, a, b, n_h, w, fr, fc) -> None:
    """Segment between point ids a and b, directed so the foreground point (fr, fc) (doubled,
    padded box) lies to its left in (x, y) = (col, row): a positive cross product."""
    ar, ac = _point(a, n_h, w)
    br, bc = _point(b, n_h, w)
    if (bc - ac) * (fr - ar) - (br - ar) * (fc - ac) > 0:
        after[a] = b
    else:
        after[b] = a


@njit(cache=True)
def _segments(labels, label, r0, r1, c0, c1):
    """Directed marching-squares segments of one label in its box padded by one pixel:
    ``after[p]`` is the point that follows point p on its ring (-1: none)."""
    h, w = r1 - r0, c1 - c0
    n_h = (h + 2) * (w + 1)
    after = np.full(n_h + (h + 1) * (w + 2), -1, np.int64)
    for i in range(h + 1):  # cell (i, j): padded pixel centres (i, j) .. (i + 1, j + 1)
        for j in range(w + 1):
            ul = _inside(labels, label, r0 + i - 1, c0 + j - 1)
            ur = _inside(labels, label, r0 + i - 1, c0 + j)
            ll = _inside(labels, label, r0 + i, c0 + j - 1)
            lr = _inside(labels, label, r0 + i, c0 + j)
            if ul == ur and ul == ll and ul == lr:
                continue
            top, bottom = i * (w + 1) + j, (i + 1) * (w + 1) + j
            left, right = n_h + i * (w + 2) + j, n_h + i * (w + 2) + j + 1
            if ul == lr and ur == ll:  # saddle: each foreground corner cut off alone
                if ul:
                    _link(after, top, left, n_h, w, 2 * i, 2 * j)
                    _link(after, bottom, right, n_h, w, 2 * i + 2, 2 * j + 2)
                else:
                    _link(after, top, right, n_h, w, 2 * i, 2 * j + 2)
                    _link(after, bottom, left, n_h, w, 2 * i + 2, 2 * j)
                continue
            first, second = -1, -1
            for p, differs in ((top, ul != ur), (bottom, ll != lr), (left, ul != ll), (right, ur != lr)):
                if differs:
                    if first < 0:
                        first = p
                    else:
                        second = p
            top_row = ul or ur  # a foreground corner: in the top row if there is one
            fr = 2 * i if top_row else 2 * i + 2
            fc = 2 * j if (ul if top_row else ll) else 2 * j + 2
            _link(after, first, second, n_h, w, fr, fc)
    return after, n_h, w


@njit(cache=True)
def _trace(labels, boxes):
    """Rings of each label l whose box ``boxes[l - 1]`` = (r0, r1, c0, c1) is not empty: doubled
    (row, col) corners, ring starts, ring labels and whether each ring is an exterior."""
    out_r, out_c, starts, ring_labels, exterior = [0][:0], [0][:0], [0], [0][:0], [True][:0]
    for k in range(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        if r1 <= r0:
            continue
        after, n_h, w = _segments(labels, k + 1, r0, r1, c0, c1)
        for first in range(after.shape[0]):
            if after[first] < 0:
                continue
            ring = [first]
            p = after[first]
            after[first] = -1
            while p != first:
                ring.append(p)
                q = after[p]
                after[p] = -1
                p = q
            m, kept, area = len(ring), 0, 0
            for t in range(m):
                ar, ac = _point(ring[t - 1], n_h, w)
                br, bc = _point(ring[t], n_h, w)
                cr, cc = _point(ring[(t + 1) % m], n_h, w)
                if (bc - ac) * (cr - br) != (br - ar) * (cc - bc):  # the direction turns here
                    out_r.append(br + 2 * r0 - 1)  # padded doubled -> doubled corner coordinates
                    out_c.append(bc + 2 * c0 - 1)
                    kept += 1
            if kept < 3:
                del out_r[len(out_r) - kept:]
                del out_c[len(out_c) - kept:]
                continue
            s0 = starts[-1]
            for t in range(kept):  # shoelace in (x, y) = (col, row), doubled: > 0 counter-clockwise
                u, v = s0 + t, s0 + (t + 1) % kept
                area += out_c[u] * out_r[v] - out_c[v] * out_r[u]
            starts.append(len(out_r))
            ring_labels.append(k + 1)
            exterior.append(area > 0)
    return (np.array(out_r, np.int64), np.array(out_c, np.int64), np.array(starts, np.int64),
            np.array(ring_labels, np.int64), np.array(exterior, np.bool_))


def _box_table(boxes: list) -> np.ndarray:
    """(n, 4) int64 (r0, r1, c0, c1) of ``find_objects`` boxes; (0, 0, 0, 0) for None."""
    table = np.zeros((len(boxes), 4), np.int64)
    for k, box in enumerate(boxes):
        if box is not None:
            table[k] = box[0].start, box[0].stop, box[1].start, box[1].stop
    return table


def label_rings(labels: np.ndarray, boxes: list | None = None) -> LabelRings:
    """Marching-squares rings (level 0.5, the nucleus face-connected) of every label of a label
    image, all in one pass (see the module docstring).

    Parameters
    ----------
    labels : (H, W) integer label image, 0 = background.
    boxes : ``scipy.ndimage.find_objects(labels)``, when already computed.

    Returns
    -------
    :class:`LabelRings`, rings in label order; a label outlined only by rings of fewer than three
    corners has none.

    Raises
    ------
    ValueError
        if ``labels`` is not a 2-D integer array or has negative values.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an (H, W) integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    if boxes is None:
        boxes = ndimage.find_objects(labels)
    table = _box_table(boxes)
    kernel_labels = labels if labels.dtype in (np.int32, np.int64, np.uint32) else labels.astype(np.int64)
    rows, cols, starts, ring_labels, exterior = _trace(kernel_labels, table)
    # close each ring: its first corner again after its last
    closed_starts = starts + np.arange(len(starts))
    last = closed_starts[1:] - 1
    points = np.empty((len(rows) + len(last), 2), np.float64)
    corner = np.ones(len(points), bool)
    corner[last] = False
    points[corner, 0], points[corner, 1] = cols / 2.0, rows / 2.0
    points[last] = points[closed_starts[:-1]]
    return LabelRings(points, closed_starts, ring_labels, exterior, boxes)


@njit(cache=True)
def _hull_pixel_count(hull, h, w) -> int:
    """Pixel centres (r, c), 0 <= r < h, 0 <= c < w, inside or on the convex polygon ``hull``
    (K, 2) of doubled (row, col) integer vertices, counted row by row in integer arithmetic: on
    row r the polygon spans [min, max] of its edges' crossings of that row."""
    k = hull.shape[0]
    count = 0
    for r in range(h):
        y = 2 * r
        first, last = w, -1  # columns of the first and last centre inside, on this row
        for e in range(k):
            ya, xa, yb, xb = hull[e, 0], hull[e, 1], hull[(e + 1) % k, 0], hull[(e + 1) % k, 1]
            if y < min(ya, yb) or y > max(ya, yb):
                continue
            if ya == yb:  # the edge lies on this row: both ends are crossings
                lo_num, lo_den, hi_num, hi_den = min(xa, xb), 1, max(xa, xb), 1
            else:  # crossing at x = xa + (y - ya) (xb - xa) / (yb - ya), doubled
                num, den = xa * (yb - ya) + (y - ya) * (xb - xa), yb - ya
                if den < 0:
                    num, den = -num, -den
                lo_num, lo_den, hi_num, hi_den = num, den, num, den
            first = min(first, -((-lo_num) // (2 * lo_den)))  # ceil(x / 2): the first centre at or after x
            last = max(last, hi_num // (2 * hi_den))  # floor(x / 2)
        first, last = max(first, 0), min(last, w - 1)
        if last >= first:
            count += last - first + 1
    return count


def hull_pixel_count(hull: np.ndarray, shape: tuple[int, int]) -> int:
    """Pixel centres of an (h, w) grid inside or on a convex polygon: the pixel count of
    ``skimage.morphology.convex_hull_image`` given its hull (what ``grid_points_in_poly`` counts
    there, without a grid per nucleus).

    Parameters
    ----------
    hull : (K, 2) float, the polygon's (row, col) vertices in order, each a multiple of 1/2 pixel
        (hulls of pixel-edge midpoints are), K >= 1.
    shape : (h, w) of the grid, pixels.

    Raises
    ------
    ValueError
        if a vertex is not a multiple of 1/2.
    """
    doubled = np.asarray(hull, np.float64).reshape(-1, 2) * 2
    vertices = np.rint(doubled).astype(np.int64)
    if not np.array_equal(vertices, doubled):
        raise ValueError("hull vertices must be multiples of 1/2 pixel")
    return int(_hull_pixel_count(vertices, int(shape[0]), int(shape[1])))


@njit(cache=True)
def _convex_counts(points, starts, ring_labels, exterior, boxes):
    """Per label, the pixel centres of its box inside or on the convex hull of its exterior
    rings' corners (Andrew's monotone chain over doubled integer coordinates)."""
    counts = np.zeros(boxes.shape[0], np.int64)
    i, n_rings = 0, ring_labels.shape[0]
    while i < n_rings:
        label, j = ring_labels[i], i
        while j < n_rings and ring_labels[j] == label:
            j += 1
        r0, r1, c0, c1 = boxes[label - 1, 0], boxes[label - 1, 1], boxes[label - 1, 2], boxes[label - 1, 3]
        size = 0
        for k in range(i, j):
            if exterior[k]:
                size += starts[k + 1] - starts[k] - 1
        rows, cols = np.empty(size, np.int64), np.empty(size, np.int64)
        m = 0
        for k in range(i, j):
            if exterior[k]:
                for p in range(starts[k], starts[k + 1] - 1):  # corner (x, y) -> doubled pixel-centre (row, col)
                    rows[m], cols[m] = points[p, 1] - 1 - 2 * r0, points[p, 0] - 1 - 2 * c0
                    m += 1
        order = np.argsort(rows * (4 * (c1 - c0) + 8) + cols)
        hull = np.empty((2 * size + 1, 2), np.int64)
        top = 0
        for sweep in range(2):  # lower hull, then upper hull
            floor = top
            for t in range(size):
                q = order[t] if sweep == 0 else order[size - 1 - t]
                while top >= floor + 2 and ((hull[top - 1, 0] - hull[top - 2, 0]) * (cols[q] - hull[top - 2, 1])
                                            - (hull[top - 1, 1] - hull[top - 2, 1]) * (rows[q] - hull[top - 2, 0])) <= 0:
                    top -= 1
                hull[top, 0], hull[top, 1] = rows[q], cols[q]
                top += 1
            top -= 1  # the last point of each chain starts the other
        counts[label - 1] = _hull_pixel_count(hull[:max(top, 1)], r1 - r0, c1 - c0)
        i = j
    return counts


def convex_pixel_counts(rings: LabelRings) -> np.ndarray:
    """Pixel count of ``skimage.morphology.convex_hull_image`` of every label's mask in its box:
    pixel centres inside or on the convex hull of the edge midpoints of the label's pixels, which
    is the hull of its exterior rings' corners (a hull vertex of the midpoints is a midpoint
    between the label and something else, so a corner of a ring).

    Parameters
    ----------
    rings : :func:`label_rings` of the label image, whose ``boxes`` has n entries.

    Returns
    -------
    (n,) int64, entry l - 1 for label l (0 for labels without rings).
    """
    doubled = np.rint(rings.points * 2).astype(np.int64)
    return _convex_counts(doubled, rings.starts, rings.labels, rings.exterior, _box_table(rings.boxes))
