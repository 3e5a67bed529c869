"""The one check every function taking a label image applies to it."""

from __future__ import annotations

import numpy as np


def check_label_image(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an array if it is a 2-D non-negative integer label image.

    Raises
    ------
    ValueError
        naming ``name``, if it is not 2-D, not of an integer dtype, or holds negative values.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image (H, W), got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(f"{name} holds negative labels")
    return labels


def nucleus_areas(*label_images: np.ndarray) -> np.ndarray:
    """(N,) int64 areas, in pixels, of every nucleus of the (H, W) label images (labels without
    pixels left out)."""
    areas = np.concatenate([np.bincount(np.asarray(labels).ravel())[1:] for labels in label_images]
                           or [np.zeros(0, np.int64)])
    return areas[areas > 0]


def median_diameter(*label_images: np.ndarray) -> tuple[float, int]:
    """(median, count) over every nucleus of the label images of its equivalent diameter
    sqrt(4 area / pi), the diameter of the disk of the same area, in pixels; (0.0, 0) without
    nuclei."""
    areas = nucleus_areas(*label_images)
    return (float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else 0.0), int(areas.size)
