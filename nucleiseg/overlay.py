"""Pictures of a segmentation: each nucleus filled in its own colour, with its outline."""

from __future__ import annotations

import colorsys

import numpy as np
from skimage.segmentation import find_boundaries

from .transforms import drop_alpha


def label_colours(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 RGB colours; row 0 (background) black, rows 1..n saturated hues spaced by
    the golden ratio so neighbouring labels differ."""
    hues = (seed * 0.1 + np.arange(n) * 0.618033988749895) % 1.0
    out = np.zeros((n + 1, 3), np.uint8)
    for i, h in enumerate(hues, start=1):
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, 0.85, 1.0)) * 255)
    return out


def colour_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """The image as 8-bit RGB, each nucleus tinted in its own colour and outlined in it.

    ``image`` (H, W) or (H, W, C) any dtype; ``labels`` (H, W) non-negative integers -> (H, W, 3) uint8.
    """
    rgb = image_to_rgb8(image).astype(np.float32)
    labels = np.asarray(labels)
    ids, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape) + (0 if ids.size and ids[0] == 0 else 1)
    colours = label_colours(int(compact.max(initial=0))).astype(np.float32)
    inside = labels > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colours[compact[inside]]
    edges = find_boundaries(labels, mode="inner") & inside
    rgb[edges] = colours[compact[edges]]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def image_to_rgb8(image: np.ndarray) -> np.ndarray:
    """An 8-bit RGB view of any image for pictures: alpha dropped, min-max stretched per image.

    ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype -> (H, W, 3) uint8.
    """
    img = drop_alpha(image).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)
    img = img.astype(np.uint8)
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img
