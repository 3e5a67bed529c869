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

Three stages overlap: the next block is read and normalised in a background thread while the
network predicts the current one, and with a pool of worker processes (:func:`postprocess_pool`)
the watershed and the ownership rule of finished blocks run there while the network goes on;
blocks are painted in raster order whatever order the workers finish in (:class:`InOrder`), so
the labels do not depend on the pool.

Memory: the image, the output label image (which may be a memory-mapped file, see
:func:`predict_blockwise`), one extended block's probabilities (3 x (block + 2 halo)^2 float32,
about 63 MB for the default 2048 px blocks; with a pool of n workers, n + 1 of them), and the
pixels and network input of the next block.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
from scipy import ndimage

from ..errors import ImageReadError
from ..io import atomic_write
from ..postprocess import WatershedParams, probabilities_to_labels
from ..progress import Progress, no_progress, sized
from ..transforms import InputParams, apply_input, input_params

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
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols]
    count = np.maximum(np.bincount(which, minlength=n + 1), 1)
    # integer coordinate sums are exact in float64: ndimage.center_of_mass's values, 3x faster
    centroids = zip(np.bincount(which, rows, n + 1)[1:] / count[1:], np.bincount(which, cols, n + 1)[1:] / count[1:])
    h, w = labels.shape
    for lab, sl, (cy, cx) in zip(range(1, n + 1), ndimage.find_objects(labels), centroids):
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


class BlockCache:
    """Finished blocks kept on disk, so a killed block-wise prediction resumes where it stopped.

    Each block's nuclei (:class:`BlockObjects`) go to ``folder/block_<i>_<j>.npz`` (masks as
    packed bits), written atomically when the block is done; ``key`` (anything that changes the
    result: model, options, scale, normalisation) is kept in ``folder/key.txt``, and blocks
    cached under another key (or all, with ``fresh``) are discarded. Painting the cached blocks
    in block raster order gives exactly the labels of an uninterrupted run.
    """

    def __init__(self, folder: str | os.PathLike, key: str, fresh: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "key.txt"
        if fresh or not marker.is_file() or marker.read_text() != key:
            for old in self.folder.glob("block_*.npz"):
                old.unlink()
            atomic_write(marker, lambda tmp: tmp.write_text(key))

    def remove(self) -> None:
        """Delete the folder and every block in it."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, i: int, j: int) -> Path:
        return self.folder / f"block_{i}_{j}.npz"

    def has(self, i: int, j: int) -> bool:
        """Whether block (i, j) is cached (without reading it)."""
        return self._path(i, j).is_file()

    def get(self, i: int, j: int) -> BlockObjects | None:
        """Block (i, j)'s nuclei if cached (a damaged file counts as absent)."""
        path = self._path(i, j)
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                origins, shapes, bits, truncated = f["origins"], f["shapes"], f["bits"], int(f["truncated"])
        except Exception:
            return None
        sizes = shapes.prod(axis=1)
        flat = np.unpackbits(bits, count=int(sizes.sum())).astype(bool)
        ends = np.cumsum(sizes)
        masks = [flat[e - n : e].reshape(shape) for e, n, shape in zip(ends, sizes, shapes.tolist())]
        return BlockObjects([tuple(o) for o in origins.tolist()], masks, truncated)

    def put(self, i: int, j: int, objects: BlockObjects) -> None:
        """Keep block (i, j)'s nuclei (atomically: a killed write leaves no file)."""
        shapes = np.array([m.shape for m in objects.masks], np.int64).reshape(-1, 2)
        flat = np.concatenate([m.ravel() for m in objects.masks]) if objects.masks else np.zeros(0, bool)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, origins=np.array(objects.origins, np.int64).reshape(-1, 2), shapes=shapes,
                         bits=np.packbits(flat), truncated=np.int64(objects.truncated))

        atomic_write(self._path(i, j), write)


class BlockwiseStats(NamedTuple):
    """What a block-wise prediction did: blocks run, nuclei kept, nuclei larger than the halo
    that touched its outer edge (segmented from what their block could see), and blocks skipped
    for holding no tissue."""

    blocks: int
    nuclei: int
    truncated: int
    skipped: int = 0  # blocks without tissue, or unreadable (see ``on_read_error``)
    read_s: float = 0.0  # seconds reading and normalising the blocks
    network_s: float = 0.0  # seconds in the network (with resizing for ``scale``)
    watershed_s: float = 0.0  # seconds in the watershed and the ownership rule
    output_s: float = 0.0  # seconds painting the labels and in ``on_block``


class BlockDone(NamedTuple):
    """One block painted into the label image: ``box`` its extended (r0, r1, c0, c1), global and
    half-open; ``image`` the pixels read for it ((r1 - r0, c1 - c0[, C]), as stored); its nuclei
    are the labels ``first``..``last`` (none when ``last < first``), all inside ``box``."""

    box: tuple[int, int, int, int]
    image: np.ndarray
    first: int
    last: int


class TissueMap(NamedTuple):
    """Where an image holds tissue: ``mask`` (h, w) bool at ``downsample`` image pixels per mask
    pixel (e.g. :func:`nucleiseg.data.slides.tissue_mask` of a low pyramid level); ``origin``
    (row, col) is where the image starts in the mask's full-resolution frame (a region)."""

    mask: np.ndarray
    downsample: float
    origin: tuple[int, int] = (0, 0)

    def any_in(self, box: tuple[int, int, int, int]) -> bool:
        """Whether the image box (r0, r1, c0, c1), half-open, touches tissue."""
        d = self.downsample
        oy, ox = self.origin
        r0, r1, c0, c1 = box[0] + oy, box[1] + oy, box[2] + ox, box[3] + ox
        h, w = self.mask.shape
        i0, i1 = min(int(r0 // d), h - 1), min(max(int(np.ceil(r1 / d)), int(r0 // d) + 1), h)
        j0, j1 = min(int(c0 // d), w - 1), min(max(int(np.ceil(c1 / d)), int(c0 // d) + 1), w)
        return bool(self.mask[i0:i1, j0:j1].any())


def extended_block(edges: tuple[list[int], list[int]], i: int, j: int, halo: int,
                   shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(core, extended) of block (i, j): global (r0, r1, c0, c1) half-open boxes; the extended box
    is the core grown by ``halo`` pixels, clipped to the image of ``shape`` (H, W)."""
    rows, cols = edges
    core = (rows[i], rows[i + 1], cols[j], cols[j + 1])
    return core, (max(core[0] - halo, 0), min(core[1] + halo, shape[0]),
                  max(core[2] - halo, 0), min(core[3] + halo, shape[1]))


class BlockGrid(NamedTuple):
    """The blocks of an image: ``edges`` (row boundaries, column boundaries, :func:`block_edges`),
    the ``halo`` in pixels (rounded up to the U-Net's pooling grid) and the image's (H, W)."""

    edges: tuple[list[int], list[int]]
    halo: int
    shape: tuple[int, int]

    @classmethod
    def of(cls, predictor, shape: tuple[int, ...], block_size: int, halo: int) -> "BlockGrid":
        """The grid :func:`predict_blockwise` uses for an image of ``shape`` with ``predictor``.

        Raises
        ------
        ValueError
            if ``block_size`` is not more than twice ``halo``.
        """
        if halo < 0 or block_size <= 2 * halo:
            raise ValueError(f"block_size ({block_size}) must exceed twice the halo ({halo})")
        m = predictor.pooling_multiple
        halo = -(-halo // m) * m  # a multiple of the pooling grid (see block_edges)
        h, w = shape[:2]
        return cls((block_edges(h, block_size, halo, m), block_edges(w, block_size, halo, m)), halo, (h, w))

    def blocks(self, tissue: "TissueMap | None" = None) -> list[tuple[int, int]]:
        """(i, j) of every block in raster order; with ``tissue``, only those whose extended box
        touches tissue."""
        grid = [(i, j) for i in range(len(self.edges[0]) - 1) for j in range(len(self.edges[1]) - 1)]
        return grid if tissue is None else [ij for ij in grid if tissue.any_in(self.boxes(*ij)[1])]

    @property
    def n_blocks(self) -> int:
        """How many blocks the grid has, tissue or not."""
        return (len(self.edges[0]) - 1) * (len(self.edges[1]) - 1)

    def boxes(self, i: int, j: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """(core, extended box) of block (i, j) (:func:`extended_block`)."""
        return extended_block(self.edges, i, j, self.halo, self.shape)


def predict_blockwise(predictor, image: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE, halo: int = DEFAULT_HALO,
                      watershed: WatershedParams | None = None, tta: bool = False, out: np.ndarray | None = None,
                      progress: Progress = no_progress, scale: float = 1.0, params: InputParams | None = None,
                      tissue: TissueMap | None = None, on_block: Callable[[BlockDone], None] | None = None,
                      on_read_error: Callable[[tuple[int, int, int, int], Exception], None] | None = None,
                      cache: BlockCache | None = None, pool: WorkerPool | None = None) -> tuple[np.ndarray, BlockwiseStats]:
    """Label image of a huge ``image``, predicted block by block (see the module docstring).

    Parameters
    ----------
    predictor : :class:`nucleiseg.inference.predictor.Predictor` (its normalisation, tile size
        and, when ``watershed`` is None, its watershed values are used).
    image : (H, W) or (H, W, C) array, any size: a NumPy array, a memory-mapped one, or anything
        that returns one for ``image[r0:r1, c0:c1]`` (a lazily read slide level,
        :class:`nucleiseg.data.slides.Slide`), read one extended block at a time, in a background
        thread one block ahead of the network (:func:`_read_ahead`).
    block_size, halo : pixels; blocks are at most ``block_size`` (rounded to the U-Net's pooling
        grid, 2**depth) and at least ``halo`` wide; the halo is rounded up to that grid.
    watershed : post-processing values; None uses the predictor's.
    tta : average the 8 dihedral transforms.
    out : optional (H, W) uint32 array of zeros to write into (e.g. a new ``tifffile.memmap``;
        not zeroed here, so that a gigapixel map is not written twice).
    scale : each block is predicted resized by this factor (:meth:`Predictor.probabilities`).
    progress : wraps the loop over blocks with the blocks' mean megapixels in the description
        ("blocks [4.19 Mpx]", :func:`nucleiseg.progress.sized`; see :mod:`nucleiseg.progress`).
    params : the input normalisation; None measures it on a subsample of ``image`` (an array).
    tissue : blocks whose extended box holds no tissue are skipped (no nuclei there).
    on_block : called after each block is painted, in raster order (:class:`BlockDone`).
    on_read_error : when given, a block whose pixels cannot be read (``ImageReadError``, e.g. a
        corrupt tile of a slide) is reported to it with its extended box and skipped (no nuclei
        there); without it the error propagates.
    cache : finished blocks are kept there, and read back instead of predicted (:class:`BlockCache`).
    pool : worker processes (:func:`postprocess_pool`) that run each block's watershed and
        ownership rule while the network predicts the next blocks; the blocks are still painted,
        cached and passed to ``on_block`` in raster order, so the labels are those without it.

    Returns
    -------
    (labels, stats): (H, W) uint32 label image, 0 = background, nuclei 1..N in block raster
    order with no gap; :class:`BlockwiseStats`.

    Raises
    ------
    ValueError
        if ``block_size`` is not more than twice ``halo``.
    """
    grid = BlockGrid.of(predictor, image.shape, block_size, halo)
    watershed = watershed or predictor.watershed
    (h, w), norm = grid.shape, predictor.config.normalization
    if params is None:
        params = input_params(image, norm.channels, norm.p_low, norm.p_high, max_pixels=4_000_000)
    labels = out if out is not None else np.zeros((h, w), np.uint32)
    todo = grid.blocks(tissue)
    skipped = grid.n_blocks - len(todo)
    cached = {ij for ij in todo if cache is not None and cache.has(*ij)}
    reads = [_Read(grid.boxes(*ij)[1], ij not in cached or on_block is not None, ij not in cached) for ij in todo]
    queue, finish = InOrder(pool), _Painter(labels, cache, on_block)
    described = sized("blocks", sum(_area(grid.boxes(*ij)[0]) for ij in todo) / 1e6 / max(len(todo), 1), "Mpx")
    for (i, j), pending in progress(zip(todo, _read_ahead(image, reads, params, norm.channels)), len(todo), described):
        core, box = grid.boxes(i, j)
        try:
            block, x, read_s = pending.result()
            objects = cache.get(i, j) if (i, j) in cached else None
            if objects is None:  # not cached, or a damaged cache file
                if x is None:
                    block, x, read_s = _read_block(image, box, True, True, params, norm.channels)
                t0 = time.perf_counter()
                probs = predictor.probabilities(x, tta, scale)
                item = ((i, j), box, block, (read_s, time.perf_counter() - t0), True)
                queue.put(item, _own, probs, watershed, box[::2], core, (h, w))
            else:
                queue.put(((i, j), box, block, (read_s, 0.0), False), None, (objects, 0.0))
        except ImageReadError as exc:
            if on_read_error is None:
                raise
            on_read_error(box, exc)
            skipped += 1
        finish(queue.ready())
    finish(queue.ready(wait_all=True))
    return labels, BlockwiseStats(finish.blocks, finish.nuclei, finish.truncated, skipped, *finish.seconds.tolist())


def _area(box: tuple[int, int, int, int]) -> int:
    """Pixels in the half-open box (r0, r1, c0, c1)."""
    return (box[1] - box[0]) * (box[3] - box[2])


class _Painter:
    """Finished blocks, in raster order: cached (when just segmented), painted into ``labels``
    and handed to ``on_block``; counts blocks, nuclei, truncated nuclei and seconds (read,
    network, watershed, output)."""

    def __init__(self, labels: np.ndarray, cache: BlockCache | None,
                 on_block: Callable[[BlockDone], None] | None) -> None:
        self.labels, self.cache, self.on_block = labels, cache, on_block
        self.blocks = self.nuclei = self.truncated = 0
        self.seconds = np.zeros(4)

    def __call__(self, done: Iterator[tuple]) -> None:
        for ((i, j), box, block, times, fresh), (objects, watershed_s) in done:
            t0 = time.perf_counter()
            if fresh and self.cache is not None:
                self.cache.put(i, j, objects)
            first, self.nuclei = self.nuclei + 1, _paint(self.labels, objects, self.nuclei)
            self.blocks, self.truncated = self.blocks + 1, self.truncated + objects.truncated
            if self.on_block is not None:
                self.on_block(BlockDone(box, block, first, self.nuclei))
            self.seconds += (*times, watershed_s, time.perf_counter() - t0)


class WorkerPool(NamedTuple):
    """An executor and how many workers it runs (:func:`postprocess_pool`)."""

    executor: Executor
    workers: int


class InOrder:
    """Results handed back in the order their work was put in, the work run in ``pool`` or,
    without one, at once. At most one more item than the pool has workers waits at a time, which
    bounds the memory the work's arguments hold."""

    def __init__(self, pool: WorkerPool | None = None) -> None:
        from collections import deque

        self.pool = pool
        self.depth = (pool.workers if pool is not None else 0) + 1
        self.items: deque = deque()

    def put(self, item, fn: Callable | None, *args) -> None:
        """Queue ``item`` with the result of ``fn(*args)`` (``fn`` None: the result is ``args[0]``)."""
        if fn is None:
            result = Future()
            result.set_result(args[0])
        elif self.pool is None:
            result = Future()
            result.set_result(fn(*args))
        else:
            result = self.pool.executor.submit(fn, *args)
        self.items.append((item, result))

    def ready(self, wait_all: bool = False) -> Iterator[tuple]:
        """(item, result) pairs, oldest first, while the oldest is done or too many wait (or all,
        with ``wait_all``). Raises what the work raised."""
        while self.items and (wait_all or self.items[0][1].done() or len(self.items) > self.depth):
            item, result = self.items.popleft()
            yield item, result.result()

    def __len__(self) -> int:
        return len(self.items)


#: Most worker processes :func:`postprocess_processes` picks by default.
MAX_POSTPROCESS_PROCESSES = 8


def postprocess_processes(requested: int | None, device) -> int:
    """How many worker processes run the watershed and the measurements beside the network:
    ``requested``; by default (None) none where the network runs on the CPU (on 2 cores its
    threads keep both busy: an 8192 x 8192 slide, ``predict --geojson``, took 53.2 s in one
    process and 49.6 / 51.3 s with one worker process in float32, 39.1-44.5 s and 38.6-41.2 s in
    bf16, the main process peaking 0.1-0.3 GB higher with one; 2-core AMD EPYC), and on CUDA one
    per CPU core beside the main process, at most :data:`MAX_POSTPROCESS_PROCESSES`. Always none
    in a daemonic process (a Dask worker, a ``multiprocessing.Pool`` worker), which is not allowed
    to start processes.

    Raises
    ------
    ValueError
        if ``requested`` is negative.
    """
    import multiprocessing

    if requested is not None and requested < 0:
        raise ValueError(f"watershed processes must be >= 0, got {requested}")
    if multiprocessing.current_process().daemon:
        return 0
    if requested is not None:
        return requested
    if getattr(device, "type", device) != "cuda":
        return 0
    return max(0, min((os.cpu_count() or 1) - 1, MAX_POSTPROCESS_PROCESSES))


@contextmanager
def postprocess_pool(processes: int) -> Iterator[WorkerPool | None]:
    """A context with a pool of ``processes`` worker processes for the watershed and the
    measurements, or with None for 0. They are started by a fork server (spawned where there is
    none, on Windows): never forked from a process whose PyTorch threads are running, and loading
    NumPy, SciPy and scikit-image, never the network. On leaving, work not started is cancelled
    and the workers stop."""
    if processes <= 0:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["nucleiseg.postprocess", "nucleiseg.measure", "nucleiseg.geojson"])
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(processes, mp_context=context)
    try:
        yield WorkerPool(pool, processes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _own(probs: np.ndarray, watershed: WatershedParams, origin: tuple[int, int], core: tuple[int, int, int, int],
         shape: tuple[int, int]) -> tuple[BlockObjects, float]:
    """The nuclei of ``core`` (:func:`owned_objects`) from an extended block's probabilities, and
    the seconds the watershed and the ownership rule took (in a worker process with a pool)."""
    t0 = time.perf_counter()
    objects = owned_objects(probabilities_to_labels(probs, watershed), origin, core, shape)
    return objects, time.perf_counter() - t0


class _Read(NamedTuple):
    """A block to read ahead: its extended ``box``; whether its pixels are wanted at all (a
    cached block's only for ``on_block``) and normalised for the network."""

    box: tuple[int, int, int, int]
    pixels: bool
    normalise: bool


def _read_block(image, box: tuple[int, int, int, int], pixels: bool, normalise: bool, params: InputParams,
                channels: str) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(pixels of ``box``, the network's input for them, seconds); None where not asked for.
    Raises what reading ``image`` raises."""
    t0 = time.perf_counter()
    if not pixels:
        return None, None, 0.0
    r0, r1, c0, c1 = box
    block = image[r0:r1, c0:c1]
    x = apply_input(block, params, channels) if normalise else None
    return block, x, time.perf_counter() - t0


def _read_ahead(image, reads: list[_Read], params: InputParams, channels: str) -> Iterator[Future]:
    """Futures of :func:`_read_block` for ``reads``, in order, each read in a background thread
    while the block before it is in the network and the watershed (JPEG decoding and colour
    deconvolution release the GIL): one block ahead, so memory holds two blocks' pixels at most.
    One thread reads, so a slide's reader is never used by two threads at once."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="nucleiseg-read") as pool:
        ahead: deque[Future] = deque()
        for read in reads:
            ahead.append(pool.submit(_read_block, image, *read, params, channels))
            if len(ahead) > 1:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()


def segment_block(predictor, image, core: tuple[int, int, int, int], box: tuple[int, int, int, int],
                  params: InputParams, watershed: WatershedParams, tta: bool,
                  scale: float) -> tuple[np.ndarray, BlockObjects, np.ndarray]:
    """Read, normalise, predict and watershed the extended block ``box`` of ``image``: (its
    pixels, the nuclei of its ``core``, seconds spent reading + normalising, in the network, in
    the watershed + ownership). Raises what reading the pixels raises."""
    block, x, read_s = _read_block(image, box, True, True, params, predictor.config.normalization.channels)
    t0 = time.perf_counter()
    probs = predictor.probabilities(x, tta, scale)
    network_s = time.perf_counter() - t0
    objects, watershed_s = _own(probs, watershed, box[::2], core, image.shape[:2])
    return block, objects, np.array([read_s, network_s, watershed_s, 0.0])


def _paint(labels: np.ndarray, objects: BlockObjects, last: int) -> int:
    """Paint a block's nuclei into ``labels`` numbered from ``last + 1`` on; returns the last
    label used. A neighbour's nucleus keeps the pixels it already has; a nucleus left with none
    is not counted."""
    for (r, c), mask in zip(objects.origins, objects.masks):
        view = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
        free = mask & (view == 0)
        if free.any():
            last += 1
            view[free] = last
    return last


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
