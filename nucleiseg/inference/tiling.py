"""Overlap-tile layout (Ronneberger et al. 2015, arXiv:1505.04597, Fig. 2) and the blending of
overlapping tiles.

Images larger than the tile size are covered by the fewest tiles of at most ``tile`` pixels that
overlap by at least ``overlap`` pixels, each shrunk to just cover the image
(:func:`tile_layout`); overlapping predictions are averaged with weights that ramp linearly from
the tile edges over the overlap (:func:`blend_window`), so seams do not show.
"""

from __future__ import annotations

import math

import numpy as np

#: Overlap-tile defaults: largest tile side and smallest overlap (pixels), tiles per network call.
DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 64
DEFAULT_TILE_BATCH = 4


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels with ``stride`` covering ``length`` (last one flush)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(tile length, start offsets) of overlap-tiles covering ``length`` pixels along one axis.

    The fewest tiles of at most ``tile`` pixels that overlap by at least ``overlap`` pixels, each
    shrunk to the smallest multiple of ``multiple`` that still covers ``length`` with them, so
    the network sees little more than the image: 1040 px with ``tile`` 1024 and ``overlap`` 64 is 2
    tiles of 560 px, not 2 of 1024. Starts are multiples of ``multiple`` when ``length`` is.
    ``length <= tile`` gives one tile, the whole length.
    """
    if length <= tile:
        return length, [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, -(-(length + (n - 1) * overlap) // (n * multiple)) * multiple)
    stride = max(multiple, (size - overlap) // multiple * multiple)
    return size, tile_starts(length, size, stride)


def blend_window(shape: int | tuple[int, int], overlap: int) -> np.ndarray:
    """(H, W) float32 weights (``shape`` an int for a square): 1 inside, ramping down linearly over
    ``overlap`` px to every edge."""
    h, w = (shape, shape) if isinstance(shape, int) else shape

    def ramp(n: int) -> np.ndarray:
        r = np.minimum(1.0, (np.arange(n) + 0.5) / max(overlap, 1))
        return np.minimum(r, r[::-1]).astype(np.float32)

    return np.outer(ramp(h), ramp(w))
