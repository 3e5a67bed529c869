"""Exact Euclidean distance transforms in numba, and distances to the two nearest nuclei.

Source: P. F. Felzenszwalb and D. P. Huttenlocher, "Distance Transforms of Sampled Functions",
Theory of Computing 8 (2012): the squared Euclidean distance transform is separable; each 1-D
pass is the lower envelope of parabolas, exact and linear in the number of pixels.

Public functions validate their input and call private ``@njit(cache=True)`` kernels (the
shape of scikit-image's thin public wrappers over a compiled core).
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from numba import njit, prange

from ..labels import check_label_image

_INF = np.inf


@njit(cache=True, inline="always")
def _envelope(f, n, spacing, out, v, z):
    """1-D squared distance transform of f (length n, inf = no site) with pixel spacing."""
    k = -1
    s2 = spacing * spacing
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -_INF
            z[1] = _INF
            continue
        while True:
            p = v[k]
            s = ((fq + s2 * q * q) - (f[p] + s2 * p * p)) / (2.0 * s2 * (q - p))
            if s <= z[k]:
                k -= 1
                if k < 0:
                    break
            else:
                break
        k += 1
        v[k] = q
        z[k] = -_INF if k == 0 else s
        z[k + 1] = _INF
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d = q - v[k]
        out[q] = s2 * d * d + f[v[k]]


@njit(cache=True, parallel=True)
def _edt_kernel(background, s0, s1):
    """Exact EDT of a 2-D boolean 'is background' array: distance to the nearest True pixel."""
    h, w = background.shape
    g = np.empty((h, w), np.float64)
    # pass 1: along axis 0, two scans per column (exact in 1-D)
    for c in prange(w):
        last = -1
        for r in range(h):
            if background[r, c]:
                last = r
            g[r, c] = _INF if last < 0 else (r - last) * s0
        last = -1
        for r in range(h - 1, -1, -1):
            if background[r, c]:
                last = r
            if last >= 0:
                d = (last - r) * s0
                if d < g[r, c]:
                    g[r, c] = d
    out = np.empty((h, w), np.float64)
    # pass 2: along axis 1, lower envelope of parabolas per row
    for r in prange(h):
        f = np.empty(w, np.float64)
        res = np.empty(w, np.float64)
        v = np.empty(w, np.int64)
        z = np.empty(w + 1, np.float64)
        for c in range(w):
            x = g[r, c]
            f[c] = x * x
        _envelope(f, w, s1, res, v, z)
        for c in range(w):
            out[r, c] = np.sqrt(res[c])
    return out


def edt(image: np.ndarray, sampling: float | Sequence[float] | None = None) -> np.ndarray:
    """Exact Euclidean distance from every pixel to the nearest zero pixel.

    Same definition as ``scipy.ndimage.distance_transform_edt(image, sampling)`` and equal to it
    to float rounding, computed by the separable linear-time method of Felzenszwalb and
    Huttenlocher (2012), in parallel over rows and columns.

    Parameters
    ----------
    image : (H, W) array; zero (False) pixels are background, everything else foreground.
    sampling : pixel spacing along (rows, columns), one float for both, or None for 1.0.

    Returns
    -------
    (H, W) float64 distances, in the units of ``sampling`` (pixels by default). 0 on background.
    With no zero pixel at all the distance is +inf everywhere (SciPy returns values measured to
    an imaginary background pixel outside the image in that case).

    Raises
    ------
    ValueError
        if ``image`` is not 2-D, or ``sampling`` is not one or two positive finite numbers.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"edt needs a 2-D image, got shape {image.shape}")
    if sampling is None:
        s0 = s1 = 1.0
    else:
        s = np.atleast_1d(np.asarray(sampling, dtype=np.float64))
        if s.size == 1:
            s = np.repeat(s, 2)
        if s.size != 2 or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"sampling must be one or two positive numbers, got {sampling!r}")
        s0, s1 = float(s[0]), float(s[1])
    if image.size == 0:
        return np.zeros(image.shape, np.float64)
    return _edt_kernel(np.ascontiguousarray(image == 0), s0, s1)


@njit(cache=True)
def _nucleus_distances(labels, label, r0, r1, c0, c1, radius, d1, d2, g, f, res, v, z):
    """Update (d1, d2) with the distance to one nucleus, in its bounding box grown by radius."""
    h, w = labels.shape
    wr0, wr1 = max(0, r0 - radius), min(h - 1, r1 + radius)
    wc0, wc1 = max(0, c0 - radius), min(w - 1, c1 + radius)
    nh = wr1 - wr0 + 1
    bw = c1 - c0 + 1
    # pass 1: per column of the bounding box, distance along the column to the nucleus
    for j in range(bw):
        c = c0 + j
        last = -1
        for i in range(nh):
            if labels[wr0 + i, c] == label:
                last = i
            g[i, j] = _INF if last < 0 else float(i - last)
        last = -1
        for i in range(nh - 1, -1, -1):
            if labels[wr0 + i, c] == label:
                last = i
            if last >= 0:
                d = float(last - i)
                if d < g[i, j]:
                    g[i, j] = d
    # pass 2: per row of the window, lower envelope over the bounding-box columns
    nw = wc1 - wc0 + 1
    r2 = float(radius) * float(radius)
    off = c0 - wc0
    for i in range(nh):
        for c in range(nw):
            f[c] = _INF
        any_site = False
        for j in range(bw):
            x = g[i, j]
            if x != _INF:
                f[off + j] = x * x
                any_site = True
        if not any_site:
            continue
        _envelope(f, nw, 1.0, res, v, z)
        r = wr0 + i
        for c in range(nw):
            dsq = res[c]
            if dsq <= r2:
                d = np.float32(np.sqrt(dsq))
                cc = wc0 + c
                if d < d1[r, cc]:
                    d2[r, cc] = d1[r, cc]
                    d1[r, cc] = d
                elif d < d2[r, cc]:
                    d2[r, cc] = d


@njit(cache=True, parallel=True)
def _chunk_distances(labels, ids, boxes, radius, n_chunks):
    """Per chunk of nuclei (k = t, t + n_chunks, ...), the two smallest distances to its nuclei."""
    h, w = labels.shape
    d1s = np.full((n_chunks, h, w), np.float32(_INF), np.float32)
    d2s = np.full((n_chunks, h, w), np.float32(_INF), np.float32)
    n = ids.shape[0]
    max_h = 0
    max_w = 0
    max_bw = 0
    for k in range(n):
        max_h = max(max_h, boxes[k, 1] - boxes[k, 0] + 1 + 2 * radius)
        max_w = max(max_w, boxes[k, 3] - boxes[k, 2] + 1 + 2 * radius)
        max_bw = max(max_bw, boxes[k, 3] - boxes[k, 2] + 1)
    for t in prange(n_chunks):
        g = np.empty((max_h, max_bw), np.float64)
        f = np.empty(max_w, np.float64)
        res = np.empty(max_w, np.float64)
        v = np.empty(max_w, np.int64)
        z = np.empty(max_w + 1, np.float64)
        for k in range(t, n, n_chunks):
            _nucleus_distances(labels, ids[k], boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3], radius,
                               d1s[t], d2s[t], g, f, res, v, z)
    return d1s, d2s


@njit(cache=True, inline="always")
def merge_pair(d1s: np.ndarray, d2s: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """The two smallest distances at (r, c) over chunks holding distinct nuclei."""
    a1 = d1s[0, r, c]
    a2 = d2s[0, r, c]
    for t in range(1, d1s.shape[0]):
        b1 = d1s[t, r, c]
        b2 = d2s[t, r, c]
        if b1 < a1:
            a2 = min(a1, b2)
            a1 = b1
        else:
            a2 = min(a2, b1)
    return a1, a2


@njit(cache=True, parallel=True)
def _merge(d1s, d2s):
    h, w = d1s.shape[1], d1s.shape[2]
    d1 = np.empty((h, w), np.float32)
    d2 = np.empty((h, w), np.float32)
    for r in prange(h):
        for c in range(w):
            d1[r, c], d2[r, c] = merge_pair(d1s, d2s, r, c)
    return d1, d2


def _bounding_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential

    if labels.size and labels.max() > (1 << 22):  # very sparse label values: keep find_objects' list small
        labels, _, inverse = relabel_sequential(labels)
        ids, boxes = _bounding_boxes(labels)
        return np.asarray(inverse[ids], np.int64), boxes
    objects = ndimage.find_objects(labels)
    ids = np.array([k + 1 for k, sl in enumerate(objects) if sl is not None], np.int64)
    boxes = np.array([[sl[0].start, sl[0].stop - 1, sl[1].start, sl[1].stop - 1] for sl in objects if sl is not None],
                     np.int64).reshape(-1, 4)
    return ids, boxes


def two_nearest_distances(labels: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances d1, d2 from every pixel to the nearest and second-nearest nucleus.

    d_k(x) is the Euclidean distance from x to the nearest pixel of nucleus k, i.e.
    ``scipy.ndimage.distance_transform_edt(labels != k)[x]``; d1 and d2 are the two smallest
    d_k over nuclei (0 for d1 inside a nucleus). Each nucleus is only looked at within
    ``max_distance`` pixels of its bounding box, so the result is exact wherever the true value
    is <= ``max_distance`` and +inf where it is larger: memory O(H W), time proportional to the
    nuclei's grown bounding boxes, in parallel over nuclei.

    Parameters
    ----------
    labels : (H, W) non-negative integer label image (gaps and non-contiguous nuclei allowed).
    max_distance : distance cut-off in pixels (> 0).

    Returns
    -------
    d1, d2 : (H, W) float32 each, pixels; +inf beyond ``max_distance`` or with fewer nuclei.

    Raises
    ------
    ValueError
        if ``labels`` is not a 2-D non-negative integer array or ``max_distance`` <= 0.
    """
    labels = check_label_image(labels)
    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    d1, d2 = _merge(*chunk_distances(labels, max_distance))
    d1[d1 > max_distance] = np.inf
    d2[d2 > max_distance] = np.inf
    return d1, d2


def chunk_distances(labels: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """The unmerged form of :func:`two_nearest_distances` (no input checks): (n_chunks, H, W)
    float32 arrays d1s, d2s, each chunk over its own nuclei; :func:`merge_pair` combines them."""
    lab = np.ascontiguousarray(labels)
    ids, boxes = _bounding_boxes(lab)
    radius = int(np.ceil(max_distance))
    n_chunks = max(1, min(numba.get_num_threads(), len(ids)))
    return _chunk_distances(lab, ids, boxes, radius, n_chunks)
