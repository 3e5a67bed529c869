"""Training targets from a label image: the contact border and the 2- and 3-channel masks.

Source: the DSB2018 winning solution (ods.ai topcoders, https://github.com/selimsef/dsb2018_topcoders,
its README): "3 channels masks for networks with softmax activation i.e. (mask - border, border,
1 - mask - border)", "2 channels masks for networks with sigmoid activation i.e. (mask - border,
border)" and "2 channels full masks i.e. (mask, border)". The border is the contact zone: pixels
within ``border_width`` pixels of two or more different nuclei, so an isolated nucleus has no
border and touching nuclei are cut apart by it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import check_label_image

#: Default border width in pixels (radius of the disk around a pixel that must see two nuclei).
DEFAULT_BORDER_WIDTH = 2

#: Class indices of the 3-channel softmax target.
INTERIOR, BORDER, BACKGROUND = 0, 1, 2


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def contact_border(labels: np.ndarray, border_width: int = DEFAULT_BORDER_WIDTH) -> np.ndarray:
    """Pixels within ``border_width`` pixels (Euclidean disk) of two or more different nuclei.

    Computed with one maximum and one minimum filter over the labels: a pixel is border when
    the largest and the smallest non-zero label in its disk differ.

    Parameters
    ----------
    labels : (H, W) non-negative integer label image, 0 = background; labels may have gaps.
    border_width : radius in pixels, >= 1.

    Returns
    -------
    (H, W) bool. Covers nucleus pixels near a contact and the background gap between nuclei.

    Raises
    ------
    ValueError
        if ``labels`` is not a 2-D non-negative integer array or ``border_width`` < 1.
    """
    labels = check_label_image(labels)
    if border_width < 1:
        raise ValueError(f"border_width must be >= 1 pixel, got {border_width}")
    footprint = _disk(int(border_width))
    lab = labels.astype(np.int64)
    big = np.iinfo(np.int64).max
    lmax = ndimage.maximum_filter(lab, footprint=footprint, mode="constant", cval=0)
    lmin = ndimage.minimum_filter(np.where(lab == 0, big, lab), footprint=footprint, mode="constant", cval=big)
    return (lmax > 0) & (lmin != big) & (lmax != lmin)


def class_map(labels: np.ndarray, border_width: int = DEFAULT_BORDER_WIDTH) -> np.ndarray:
    """The 3-class target as one index per pixel: 0 = mask - border, 1 = border, 2 = background.

    Returns (H, W) uint8; ``np.eye(3)[class_map]`` is :func:`softmax_targets` moved to the last axis.
    """
    border = contact_border(labels, border_width)
    out = np.full(labels.shape, BACKGROUND, dtype=np.uint8)
    out[labels > 0] = INTERIOR
    out[border] = BORDER
    return out


def softmax_targets(labels: np.ndarray, border_width: int = DEFAULT_BORDER_WIDTH) -> np.ndarray:
    """3-channel target (mask - border, border, 1 - mask - border) for a softmax network.

    Returns (3, H, W) uint8 of 0/1; the channels partition every pixel (they sum to 1).
    """
    cls = class_map(labels, border_width)
    return np.stack([cls == INTERIOR, cls == BORDER, cls == BACKGROUND]).astype(np.uint8)


def sigmoid_targets(labels: np.ndarray, border_width: int = DEFAULT_BORDER_WIDTH, full_mask: bool = False) -> np.ndarray:
    """2-channel target for a sigmoid network.

    ``full_mask=False``: (mask - border, border); ``full_mask=True``: (mask, border).
    Returns (2, H, W) uint8 of 0/1.
    """
    labels = check_label_image(labels)
    border = contact_border(labels, border_width)
    mask = labels > 0
    first = mask if full_mask else (mask & ~border)
    return np.stack([first, border]).astype(np.uint8)
