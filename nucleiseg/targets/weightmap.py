"""The U-Net weight map (Ronneberger, Fischer, Brox 2015, arXiv:1505.04597, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

d1, d2: distances from x to the nearest and second-nearest nucleus
(:func:`nucleiseg.targets.distance.two_nearest_distances`). The border term is applied on background
pixels only and is 0 with fewer than two nuclei. It is below ``w0 * 1e-7`` once
d1 + d2 > 6 sigma, so the distances are only needed up to 6 sigma: the map is exact there and
the term is set to 0 beyond.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from numba import njit, prange

from .distance import chunk_distances, merge_pair
from ..labels import check_label_image


def class_balance_weights(labels: np.ndarray) -> tuple[float, float]:
    """(background, foreground) weights inversely proportional to class frequency.

    With foreground fraction f: w_bg = 0.5 / (1 - f), w_fg = 0.5 / f, so each class carries half
    of the total weight and the mean weight over the image is 1. (1, 1) if one class is absent.
    """
    f = float(np.count_nonzero(labels)) / max(labels.size, 1)
    if f == 0.0 or f == 1.0:
        return 1.0, 1.0
    return 0.5 / (1.0 - f), 0.5 / f


def unet_weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """The U-Net paper's pixel weight map, eq. 2 of arXiv:1505.04597.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), the second term on background
    pixels (labels == 0) only, 0 with fewer than two nuclei, and 0 where d1 + d2 > 6 sigma
    (there it is below w0 * 1e-7).

    Parameters
    ----------
    labels : (H, W) non-negative integer label image, 0 = background (gaps allowed).
    w0 : border weight (paper: 10).
    sigma : border width in pixels (paper: 5).
    class_weights : (background, foreground) w_c values; None balances class frequencies
        (:func:`class_balance_weights`).

    Returns
    -------
    (H, W) float32.

    Raises
    ------
    ValueError
        if ``labels`` is not a 2-D non-negative integer array, ``sigma`` <= 0, ``w0`` < 0, or
        ``class_weights`` is not two non-negative numbers.
    """
    labels = check_label_image(labels)
    if not sigma > 0 or not w0 >= 0:
        raise ValueError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
    if class_weights is None:
        w_bg, w_fg = class_balance_weights(labels)
    else:
        cw = [float(x) for x in class_weights]
        if len(cw) != 2 or min(cw) < 0 or not np.all(np.isfinite(cw)):
            raise ValueError(f"class_weights must be (background, foreground) >= 0, got {class_weights!r}")
        w_bg, w_fg = cw
    if w0 == 0 or labels.size == 0:
        return np.where(labels == 0, np.float32(w_bg), np.float32(w_fg)).astype(np.float32)
    d1s, d2s = chunk_distances(labels, 6.0 * sigma)
    return _weights(labels, d1s, d2s, np.float32(w_bg), np.float32(w_fg), np.float32(w0),
                    np.float32(1.0 / (2.0 * sigma * sigma)), np.float32(6.0 * sigma))


@njit(cache=True, parallel=True)
def _weights(labels, d1s, d2s, w_bg, w_fg, w0, inv_two_sigma2, cutoff):
    """Eq. 2 per pixel from the per-chunk distances, in one pass (merge fused in)."""
    h, w = labels.shape
    out = np.empty((h, w), np.float32)
    for r in prange(h):
        for c in range(w):
            if labels[r, c] != 0:
                out[r, c] = w_fg
                continue
            d1, d2 = merge_pair(d1s, d2s, r, c)
            s = d1 + d2
            out[r, c] = w_bg + w0 * np.exp(-s * s * inv_two_sigma2) if s <= cutoff else w_bg
    return out
