"""Block-wise prediction of one huge image (a whole-slide scan) with bounded memory.

The image is cut into blocks (:func:`block_edges`) and each block is extended by a ``halo`` of
its neighbours' pixels (no padding at the image edges: a block on the image border has no halo
there). Every extended block is normalised with the whole image's percentiles (estimated once on a
subsample), run through the network (overlap-tile inside the block) and the watershed. A block
then keeps only the nuclei it *owns*, those whose centroid lies in its core (the block without
halo), each whole as it was segmented with the halo's context. A nucleus cut by a block border
is therefore segmented whole by the block that owns it and discarded by its neighbours, never
stitched from pieces, as long as it is smaller than the halo (default 128 px; DSB2018 nuclei are
at most about 100 px across). This is the ownership rule of StarDist's ``predict_instances_big``
rather than Cellpose's label linking across faces: no merge step can join two touching nuclei.

Nuclei are numbered 1..N in block raster order with no gap (a nucleus all of whose pixels a
neighbour's nucleus already holds is not counted), as :meth:`Predictor.predict
<nucleiseg.inference.predictor.Predictor.predict>` promises.

Memory: the image, the output label image (which may be a memory-mapped file, see
:func:`predict_blockwise`), and one extended block's probabilities (3 x (block + 2 halo)^2
float32, about 63 MB for the default 2048 px blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..postprocess import WatershedParams, probabilities_to_labels
from ..progress import Progress, no_progress
from ..transforms import apply_input, input_params

DEFAULT_BLOCK_SIZE = 2048
DEFAULT_HALO = 128


def is_huge(shape: tuple[int, ...], block_size: int = DEFAULT_BLOCK_SIZE) -> bool:
    """Whether ``predict`` takes the block-wise path: a side longer than 2 x ``block_size``."""
    return max(shape[:2]) > 2 * block_size


@dataclass
class BlockObjects:
    """The nuclei one block owns: global (row, col) bounding-box origins and their masks."""

    origins: list[tuple[int, int]]
    masks: list[np.ndarray]  # bool, each cropped to its bounding box
    truncated: int  # owned nuclei touching the halo's outer edge (larger than the halo)


def block_edges(length: int, block_size: int, halo: int, multiple: int = 16) -> list[int]:
    """Near-equal block boundaries 0 = e0 < e1 < ... < en = length, each block <= ``block_size``
    and >= ``halo`` pixels (so one halo never reaches past the next block), inner boundaries at
    multiples of ``multiple`` (with a halo that is one too, every extended block starts on the
    U-Net's pooling grid, where its output does not depend on where the block starts)."""
    n = max(1, int(np.ceil(length / block_size)))
    edges = [0] + [int(round(i * length / n / multiple)) * multiple for i in range(1, n)] + [length]
    if n > 1 and min(b - a for a, b in zip(edges, edges[1:])) < halo:
        raise ValueError(f"blocks of {length / n:.0f} px are smaller than the halo ({halo} px)")
    return edges


def owned_objects(labels: np.ndarray, origin: tuple[int, int], core: tuple[int, int, int, int],
                  image_shape: tuple[int, int]) -> BlockObjects:
    """Objects of an extended block's ``labels`` (H, W) whose centroid lies in ``core``.

    ``origin``: global (row, col) of ``labels[0, 0]``; ``core``: global (r0, r1, c0, c1),
    half-open; ``image_shape``: the whole image's (H, W), to tell the halo's outer edge from the
    image edge.
    """
    r0, r1, c0, c1 = core
    n = int(labels.max(initial=0))
    out = BlockObjects([], [], 0)
    if n == 0:
        return out
    index = np.arange(1, n + 1)
    centroids = ndimage.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, index)
    h, w = labels.shape
    for lab, sl, (cy, cx) in zip(index, ndimage.find_objects(labels), centroids):
        if sl is None:
            continue
        gy, gx = cy + origin[0], cx + origin[1]
        if not (r0 <= gy < r1 and c0 <= gx < c1):
            continue
        touches = ((sl[0].start == 0 and origin[0] > 0) or (sl[1].start == 0 and origin[1] > 0)
                   or (sl[0].stop == h and origin[0] + h < image_shape[0])
                   or (sl[1].stop == w and origin[1] + w < image_shape[1]))
        out.truncated += int(touches)
        out.origins.append((sl[0].start + origin[0], sl[1].start + origin[1]))
        out.masks.append(labels[sl] == lab)
    return out


class BlockwiseStats(NamedTuple):
    """What a block-wise prediction did: blocks run, nuclei kept, and nuclei larger than the halo
    that touched its outer edge (segmented from what their block could see)."""

    blocks: int
    nuclei: int
    truncated: int


def extended_block(edges: tuple[list[int], list[int]], i: int, j: int, halo: int,
                   shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(core, extended) of block (i, j): global (r0, r1, c0, c1) half-open boxes; the extended box
    is the core grown by ``halo`` pixels, clipped to the image of ``shape`` (H, W)."""
    rows, cols = edges
    core = (rows[i], rows[i + 1], cols[j], cols[j + 1])
    return core, (max(core[0] - halo, 0), min(core[1] + halo, shape[0]),
                  max(core[2] - halo, 0), min(core[3] + halo, shape[1]))


def predict_blockwise(predictor, image: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE, halo: int = DEFAULT_HALO,
                      watershed: WatershedParams | None = None, tta: bool = False, out: np.ndarray | None = None,
                      progress: Progress = no_progress, scale: float = 1.0) -> tuple[np.ndarray, BlockwiseStats]:
    """Label image of a huge ``image``, predicted block by block (see the module docstring).

    Parameters
    ----------
    predictor : :class:`nucleiseg.inference.predictor.Predictor` (its normalisation, tile size
        and, when ``watershed`` is None, its watershed values are used).
    image : (H, W) or (H, W, C) array, any size; a NumPy array or a memory-mapped one.
    block_size, halo : pixels; blocks are at most ``block_size`` (rounded to the U-Net's pooling
        grid, 2**depth) and at least ``halo`` wide; the halo is rounded up to that grid.
    watershed : post-processing values; None uses the predictor's.
    tta : average the 8 dihedral transforms.
    out : optional (H, W) uint32 array to write into (e.g. ``tifffile.memmap``), zeroed first.
    scale : each block is predicted resized by this factor (:meth:`Predictor.probabilities`).
    progress : wraps the loop over blocks (see :mod:`nucleiseg.progress`).

    Returns
    -------
    (labels, stats): (H, W) uint32 label image, 0 = background, nuclei 1..N in block raster
    order with no gap; :class:`BlockwiseStats`.

    Raises
    ------
    ValueError
        if ``block_size`` is not more than twice ``halo``.
    """
    if halo < 0 or block_size <= 2 * halo:
        raise ValueError(f"block_size ({block_size}) must exceed twice the halo ({halo})")
    watershed = watershed or predictor.watershed
    m = predictor.pooling_multiple
    halo = -(-halo // m) * m  # a multiple of the pooling grid (see block_edges)
    h, w = image.shape[:2]
    edges = block_edges(h, block_size, halo, m), block_edges(w, block_size, halo, m)
    norm = predictor.config.normalization
    params = input_params(image, norm.channels, norm.p_low, norm.p_high, max_pixels=4_000_000)
    labels = out if out is not None else np.zeros((h, w), np.uint32)
    labels[...] = 0
    blocks = nuclei = truncated = 0
    grid = [(i, j) for i in range(len(edges[0]) - 1) for j in range(len(edges[1]) - 1)]
    for i, j in progress(grid, len(grid), "blocks"):
        core, (r0, r1, c0, c1) = extended_block(edges, i, j, halo, (h, w))
        probs = predictor.probabilities(apply_input(image[r0:r1, c0:c1], params, norm.channels), tta, scale)
        objects = owned_objects(probabilities_to_labels(probs, watershed), (r0, c0), core, (h, w))
        for (r, c), mask in zip(objects.origins, objects.masks):
            view = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
            free = mask & (view == 0)  # a neighbour's nucleus keeps the pixels it already has
            if free.any():
                nuclei += 1
                view[free] = nuclei
        blocks += 1
        truncated += objects.truncated
    return labels, BlockwiseStats(blocks, nuclei, truncated)


def nuclei_cut_at_borders(reference: np.ndarray, labels: np.ndarray, rows: list[int], cols: list[int],
                          cover: float = 0.9) -> tuple[int, int]:
    """(crossing, cut): how many nuclei of ``reference`` cross an inner block border (``rows`` /
    ``cols`` from :func:`block_edges`), and how many of those are not covered to at least
    ``cover`` of their pixels by a single nucleus of ``labels`` (split or lost at the border).

    ``reference``, ``labels``: (H, W) integer label images, e.g. whole-image and block-wise
    predictions of the same image.
    """
    crossing: set[int] = set()
    for r in rows[1:-1]:
        a, b = reference[r - 1], reference[r]
        crossing |= set(np.unique(a[(a == b) & (a > 0)]).tolist())
    for c in cols[1:-1]:
        a, b = reference[:, c - 1], reference[:, c]
        crossing |= set(np.unique(a[(a == b) & (a > 0)]).tolist())
    cut = 0
    for lab in crossing:
        inside = labels[reference == lab]
        counts = np.bincount(inside[inside > 0].astype(np.int64))
        cut += int(counts.size == 0 or counts.max() < cover * inside.size)
    return len(crossing), cut
