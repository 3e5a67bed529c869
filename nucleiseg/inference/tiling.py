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

#: Smallest overlap of neighbouring tiles (pixels).
DEFAULT_OVERLAP = 64
#: Largest tile side (pixels), by device type. On the CPU the network's speed per pixel falls once
#: a tile's activations outgrow the caches: bundled network, bf16, one tile per call, 2-core AMD
#: EPYC: 5.9 megapixels a second at 640 x 640, 4.5 at 880 x 880, 3.1 at 1680 x 1680; a 1677 px
#: slide block as nine 608 px tiles 0.66-0.71 s against four 880 px tiles 0.76-0.85 s, and no
#: loss on the validation sets. CUDA keeps 1024.
TILE_SIZE = {"cpu": 768, "cuda": 1024}
#: Tiles per network call, by device type. On the CPU one tile at a time is fastest: the
#: activations of a batch outgrow the caches, and the passes over them (skip concatenation, max
#: pooling, ReLU) run at memory speed. Bundled network, a 1677 x 1677 two-channel input as four
#: 880 px tiles, 2-core AMD EPYC (avx512_bf16), best of 3: bf16 0.85 s one at a time, 0.99 s two,
#: 1.08 s four; float32 1.69 / 1.86 / 2.05 s. On CUDA, 4. Both: benchmarks/README.md, "Cache-sized
#: tiles, one at a time, on the CPU".
TILE_BATCH = {"cpu": 1, "cuda": 4}


def default_tile_size(device_type: str) -> int:
    """Largest tile side on a device of type ``device_type`` ("cpu", "cuda"; others as "cpu")."""
    return TILE_SIZE.get(device_type, TILE_SIZE["cpu"])


def default_tile_batch(device_type: str) -> int:
    """Tiles per network call on a device of type ``device_type`` ("cpu", "cuda"; others as "cpu")."""
    return TILE_BATCH.get(device_type, TILE_BATCH["cpu"])


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
