"""Block-wise prediction of one huge image (a whole-slide scan) with bounded memory.

The image is cut into blocks with ``dask.array`` and each block is extended by a ``halo`` of
its neighbours' pixels (``dask.array.overlap.overlap``, no padding at the image edges). Every
extended block is normalised with the whole image's percentiles (estimated once on a
subsample), run through the network (overlap-tile inside the block) and the watershed. A block
then keeps only the nuclei it *owns*, those whose centroid lies in its core (the block without
halo), each whole as it was segmented with the halo's context. A nucleus cut by a block border
is therefore segmented whole by the block that owns it and discarded by its neighbours, never
stitched from pieces, as long as it is smaller than the halo (default 128 px; DSB2018 nuclei are
at most about 100 px across). This is the ownership rule of StarDist's ``predict_instances_big``
rather than Cellpose's label linking across faces: no merge step can join two touching nuclei.

Memory: the image, the output label image (which may be a memory-mapped file, see
:func:`predict_blockwise`), and one extended block's probabilities (3 x (block + 2 halo)^2
float32, about 63 MB for the default 2048 px blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from scipy import ndimage

from .data.images import apply_normalization, normalization_params
from .postprocess import probabilities_to_labels

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


def predict_blockwise(predictor, image: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE, halo: int = DEFAULT_HALO,
                      tta: bool = False, out: np.ndarray | None = None,
                      progress: Callable[[Iterable], Iterator] = iter) -> tuple[np.ndarray, dict]:
    """Label image of a huge ``image``, predicted block by block (see the module docstring).

    Parameters
    ----------
    predictor : :class:`nucleiseg.predict.Predictor` (its normalisation percentiles, watershed
        values and tile size are used).
    image : (H, W) or (H, W, C) array, any size; a NumPy array or a memory-mapped one.
    block_size, halo : pixels; blocks are at most ``block_size`` (rounded to the U-Net's pooling
        grid, 2**depth) and at least ``halo`` wide; the halo is rounded up to that grid.
    out : optional (H, W) uint32 array to write into (e.g. ``tifffile.memmap``), zeroed first.

    Returns
    -------
    (labels, stats): (H, W) uint32 label image, nuclei numbered in block raster order (a label
    may be missing when a neighbour's nucleus already held all its pixels); stats
    ``{"blocks", "nuclei", "truncated"}`` (truncated = nuclei larger than the halo that touched
    its outer edge, segmented from what the block could see).

    Raises
    ------
    ValueError
        if ``block_size`` is not more than twice ``halo``.
    """
    import dask
    import dask.array as da

    if halo < 0 or block_size <= 2 * halo:
        raise ValueError(f"block_size ({block_size}) must exceed twice the halo ({halo})")
    m = 2 ** getattr(predictor.model, "depth", 0)
    halo = -(-halo // m) * m  # a multiple of the pooling grid (see block_edges)
    h, w = image.shape[:2]
    rows, cols = block_edges(h, block_size, halo, m), block_edges(w, block_size, halo, m)
    chunks = (tuple(np.diff(rows)), tuple(np.diff(cols))) + ((image.shape[2],) if image.ndim == 3 else ())
    array = da.from_array(image, chunks=chunks)
    depth = {0: halo, 1: halo} | ({2: 0} if image.ndim == 3 else {})
    extended = da.overlap.overlap(array, depth=depth, boundary="none")
    blocks = extended.to_delayed()
    if image.ndim == 3:
        blocks = blocks[..., 0]
    params = normalization_params(image, predictor.p_low, predictor.p_high, max_pixels=4_000_000)

    def segment(block: np.ndarray, origin: tuple[int, int], core: tuple[int, int, int, int]) -> BlockObjects:
        probs = predictor.probabilities_of_normalized(apply_normalization(block, params), tta=tta)
        return owned_objects(probabilities_to_labels(probs, predictor.watershed), origin, core, (h, w))

    labels = out if out is not None else np.zeros((h, w), np.uint32)
    labels[...] = 0
    stats = {"blocks": 0, "nuclei": 0, "truncated": 0}
    grid = [(i, j) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]
    for i, j in progress(grid):
        origin = (max(rows[i] - halo, 0), max(cols[j] - halo, 0))
        core = (rows[i], rows[i + 1], cols[j], cols[j + 1])
        task = dask.delayed(segment)(blocks[i, j], origin, core)
        objects = task.compute(scheduler="sync")  # one block at a time: bounded memory
        for (r, c), mask in zip(objects.origins, objects.masks):
            stats["nuclei"] += 1
            view = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
            view[mask & (view == 0)] = stats["nuclei"]  # a neighbour's nucleus keeps pixels it already has
        stats["blocks"] += 1
        stats["truncated"] += objects.truncated
    return labels, stats


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
