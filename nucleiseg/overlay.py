"""Pictures of a segmentation: nucleus outlines drawn on the image."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from .data.images import image_to_rgb8


def outline_overlay(image: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """The image as 8-bit RGB with the inner outline of every nucleus in ``color``.

    ``image`` (H, W) or (H, W, C) any dtype; ``labels`` (H, W) integers -> (H, W, 3) uint8.
    """
    rgb = image_to_rgb8(image).copy()
    rgb[find_boundaries(labels, mode="inner")] = color
    return rgb
