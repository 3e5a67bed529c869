"""Prediction of a whole-slide image, read lazily and written as it goes.

A slide (:mod:`nucleiseg.data.slides`: pyramidal TIFF, SVS, NDPI, OME-TIFF) is never read whole.
From its largest level of at most 4 megapixels (the thumbnail) come the input normalisation (the
percentiles :func:`~nucleiseg.transforms.input_params` would take on a subsample) and the tissue
mask (:func:`~nucleiseg.data.slides.tissue_mask`); blocks whose extended box holds no tissue are
skipped. ``--diameter auto`` estimates the nuclei's size on one tile at the tissue's middle.
Level 0 is then predicted block by block (:func:`~nucleiseg.inference.blockwise.predict_blockwise`:
each block read with its halo, the nuclei whose centroid lies in its core kept whole), and each
block's nuclei go out as soon as the block is done: painted into a memory-mapped label map (a
temporary file beside the outputs, its pages released after each block), appended to the
GeoJSON (QuPath objects, level-0 pixel coordinates) and to the per-nucleus CSV table, with their
measurements taken on the block's own pixels (with ``options.watershed_processes``, the
watershed, measurements and outlines run in worker processes while the network predicts the
next blocks, and are written in block order). At the end the label map becomes a tiled,
compressed, pyramidal OME-TIFF (:func:`~nucleiseg.io.write_label_pyramid`, band by band).
Memory: the thumbnail, one extended block with its probabilities and the network's activations on
:data:`SLIDE_TILE_BATCH` tiles, one band of labels; never the slide.
"""

from __future__ import annotations

import copy
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.slides import Slide, tissue_mask
from ..errors import ImageReadError
from ..io import (OutputPaths, release_pages, return_free_memory, strided_rows, table_writer, write_label_pyramid,
                  write_png)
from ..measure import COLUMNS, measure_nuclei
from ..postprocess import WatershedParams
from ..progress import Progress, no_progress
from ..transforms import InputParams, input_params
from .blockwise import (DEFAULT_HALO, BlockCache, BlockDone, BlockGrid, BlockwiseStats, InOrder, TissueMap,
                        WorkerPool, postprocess_pool, postprocess_processes, predict_blockwise,
                        segment_block)
from .predictor import SIZE_REGION, PredictOptions, Predictor, scaled_watershed

#: The thumbnail (normalisation, tissue mask, overlay) is the largest level of at most this many pixels.
THUMBNAIL_PIXELS = 4_000_000
#: Tiles per network call on a slide, at most: the network's activations are most of the memory.
#: On an 8192 x 8192 slide (2-core AMD EPYC, float32) 2 tiles of 1024 px peaked at 1.50 GB in
#: 55 s, 4 (CUDA's batch for images) at 1.97 GB in 62 s, 1 at 1.43 GB in 61 s, same nuclei. On the CPU
#: the batch is 1 anyway (:data:`~nucleiseg.inference.tiling.TILE_BATCH`).
SLIDE_TILE_BATCH = 2


@dataclass
class SlideResult:
    """What :func:`predict_slide` did: nuclei found, block counts (:class:`BlockwiseStats`), the
    diameter (pixels, or None) and scale predicted at, the pixel size used (µm per level-0 pixel,
    or None), the megapixels predicted (the window of its level) and the fraction of blocks holding
    tissue, and seconds."""

    n_nuclei: int
    stats: BlockwiseStats
    diameter: float | None
    scale: float
    pixel_size: float | None
    megapixels: float
    tissue_fraction: float
    seconds: float
    table: dict[str, np.ndarray] | None  # area_px of every nucleus (for summary.csv), with measure
    unreadable: list[str]  # one line per block skipped for a tile that could not be read


def shift_table(table: dict[str, np.ndarray], label_offset: int, offset: tuple[int, int],
                scale: float = 1.0) -> dict[str, np.ndarray]:
    """A :func:`~nucleiseg.measure.measure_nuclei` table of a block, moved into the slide: labels
    plus ``label_offset``; centroids and bounding boxes plus ``offset`` (row, col) pixels, then
    times ``scale`` (level-0 pixels per pixel of the level predicted), as are diameters, and
    areas in pixels times ``scale`` squared."""
    out = dict(table)
    out["label"] = table["label"] + label_offset
    for name in ("centroid_row", "bbox_min_row", "bbox_max_row"):
        out[name] = (table[name] + offset[0]) * scale
    for name in ("centroid_col", "bbox_min_col", "bbox_max_col"):
        out[name] = (table[name] + offset[1]) * scale
    if scale != 1.0:
        out["area_px"] = table["area_px"] * scale**2
        out["equivalent_diameter_px"] = table["equivalent_diameter_px"] * scale
    return out


class Window:
    """Rows ``r0:r0 + h`` and columns ``c0:c0 + w`` of a slide level, read like an image of
    their own (``window[a:b, c:d]`` reads the level's ``[r0 + a:r0 + b, c0 + c:c0 + d]``)."""

    def __init__(self, level, origin: tuple[int, int], size: tuple[int, int]) -> None:
        self.level, self.origin = level, origin
        self.shape = tuple(size) + tuple(level.shape[2:])
        self.dtype, self.ndim = level.dtype, len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        oy, ox = self.origin
        return self.level[oy + rows.start : oy + rows.stop, ox + cols.start : ox + cols.stop]


def slide_window(slide: Slide, options: PredictOptions) -> tuple[Window, float]:
    """(the part of the slide to predict, its level's downsample): ``options.level`` (0 by
    default) cut to ``options.region`` (x, y, width, height in level-0 pixels, clipped to the
    slide) when given.

    Raises
    ------
    ImageReadError
        for a level the slide does not have, or a region outside it.
    """
    info = slide.info
    if options.level >= len(info.levels):
        raise ImageReadError(f"{info.path}: no level {options.level} (the slide has {len(info.levels)})")
    d = info.downsamples[options.level]
    lh, lw = info.levels[options.level]
    r0, c0, r1, c1 = 0, 0, lh, lw
    if options.region is not None:
        x, y, w, h = options.region
        r0, c0 = int(y // d), int(x // d)
        r1, c1 = min(int(np.ceil((y + h) / d)), lh), min(int(np.ceil((x + w) / d)), lw)
        if r1 <= r0 or c1 <= c0:
            raise ImageReadError(f"{info.path}: region x={x}, y={y}, {w} x {h} px lies outside the slide "
                                 f"({info.levels[0][1]} x {info.levels[0][0]} px at level 0)")
    return Window(slide.level(options.level), (r0, c0), (r1 - r0, c1 - c0)), d


def tissue_tile(image, tissue: TissueMap, size: int) -> np.ndarray:
    """A ``size`` x ``size`` region of ``image`` (a slide level or a :class:`Window` of one, whose
    frame ``tissue`` maps) centred on the tissue pixel inside it nearest the median row and column
    of that tissue (the image's centre if it holds no tissue)."""
    h, w = image.shape[:2]
    rows, cols = np.nonzero(tissue.mask)
    ys, xs = (rows + 0.5) * tissue.downsample - tissue.origin[0], (cols + 0.5) * tissue.downsample - tissue.origin[1]
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    ys, xs = ys[inside], xs[inside]
    if ys.size:
        k = int(np.argmin((ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2))
        cy, cx = ys[k], xs[k]
    else:
        cy, cx = h / 2, w / 2
    r0 = int(np.clip(cy - size / 2, 0, max(h - size, 0)))
    c0 = int(np.clip(cx - size / 2, 0, max(w - size, 0)))
    return image[r0 : r0 + size, c0 : c0 + size]


def _slide_scale(predictor: Predictor, image, tissue: TissueMap, options: PredictOptions,
                 unreadable: list[str]) -> tuple[float | None, float]:
    """(diameter, scale) for the slide: with ``--diameter auto`` estimated on the tile at the
    tissue's middle (:func:`tissue_tile`; an unreadable tile is reported into ``unreadable`` and
    the slide predicted unscaled); a given diameter or none reads no pixels."""
    if options.diameter != "auto":
        return predictor.scale_for(image, options)
    try:
        return predictor.scale_for(tissue_tile(image, tissue, SIZE_REGION), options)
    except ImageReadError as exc:
        unreadable.append(f"{exc} (diameter not estimated)")
        return None, 1.0


def _cache_key(predictor: Predictor, options: PredictOptions, scale: float, watershed, params) -> str:
    """What a cached block's nuclei depend on: the network's weights and configuration, the
    precision and whether the network runs folded or compiled (each rounds differently in bf16),
    the tile size and overlap (where the tiles' seams fall), the block size, TTA, level and region,
    scale, watershed values and normalisation."""
    import hashlib

    digest = hashlib.sha1(repr(predictor.config.to_dict()).encode())
    if getattr(predictor, "model", None) is not None:
        for name, tensor in predictor.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    rewritten = getattr(predictor, "network", None) is not getattr(predictor, "model", None)
    digest.update(repr((predictor.backend, getattr(predictor, "autocast", None), rewritten, predictor.tile_size,
                        predictor.overlap, options.block_size, options.tta, options.level, options.region, scale,
                        watershed, params)).encode())
    return digest.hexdigest()


class _BlockWriter:
    """Streams each finished block's nuclei (:class:`BlockDone`) to the GeoJSON (``add_features``)
    and the table (``add_rows``), measured on the block's own pixels, in slide coordinates; with
    a ``pool``, measured and outlined there (:func:`measure_block`) and written in block order."""

    def __init__(self, pixel_size: float | None, origin: tuple[int, int] = (0, 0), scale: float = 1.0,
                 pool: WorkerPool | None = None) -> None:
        self.pixel_size, self.origin, self.scale = pixel_size, origin, scale  # of level 0; level px; level-0 px per px
        self.labels: np.ndarray | None = None  # the slide's label map being painted
        self.add_features = None
        self.add_rows = None
        self.areas: list[np.ndarray] = []
        self.queue = InOrder(pool)

    def __call__(self, done: BlockDone) -> None:
        try:
            self._write(done)
        finally:
            release_pages(self.labels)  # resident memory: the blocks in use, not the slide
            return_free_memory()

    def _write(self, done: BlockDone) -> None:
        if done.last < done.first or (self.add_features is None and self.add_rows is None):
            return
        r0, r1, c0, c1 = done.box
        view = self.labels[r0:r1, c0:c1]
        mine = (view >= done.first) & (view <= done.last)
        local = np.where(mine, view - (done.first - 1), 0).astype(np.int32)
        pixel_size = self.pixel_size * self.scale if self.pixel_size else None
        offset = (r0 + self.origin[0], c0 + self.origin[1])
        self.queue.put(None, measure_block, local, done.image, pixel_size, offset, done.first - 1, self.scale,
                       self.add_features is not None)
        self.flush()

    def flush(self, wait_all: bool = False) -> None:
        """Write the blocks measured so far, in order (all of them, with ``wait_all``)."""
        for _, (moved, features) in self.queue.ready(wait_all):
            if self.add_rows is not None:
                self.add_rows(moved)
                self.areas.append(moved["area_px"])
            if self.add_features is not None:
                self.add_features(features)


def measure_block(local: np.ndarray, image: np.ndarray, pixel_size: float | None, offset: tuple[int, int],
                  label_offset: int, scale: float, features: bool) -> tuple[dict[str, np.ndarray], str | None]:
    """(table, GeoJSON features as :func:`~nucleiseg.geojson.encode_features` text) of one block's
    nuclei in slide coordinates: ``local`` (h, w) int32 labels 1..n of the block's nuclei over its
    pixels ``image``, measured (:func:`measure_nuclei`, ``pixel_size`` µm per pixel of the level
    predicted) and outlined (:func:`~nucleiseg.geojson.label_features`, with ``features``), moved
    by ``offset`` (row, col) pixels and ``label_offset``, then times ``scale``
    (:func:`shift_table`)."""
    from ..outlines import label_rings

    rings = label_rings(local)  # traced once: the table's solidity and the GeoJSON's outlines
    table = measure_nuclei(local, image, pixel_size, rings)
    moved = shift_table(table, label_offset, offset, scale)
    if not features:
        return moved, None
    from ..geojson import encode_features, label_features

    outlines = label_features(local, moved | {"label": table["label"]}, offset, label_offset, scale, rings)
    return moved, encode_features(outlines)


def _write_overlay(path: Path, thumbnail: np.ndarray, step: float, labels: np.ndarray,
                   origin: tuple[int, int]) -> None:
    """The overlay PNG at the thumbnail's resolution: ``labels`` (of the predicted window, which
    starts at ``origin`` of its level) every ``step``-th pixel over the matching thumbnail crop."""
    from ..overlay import colour_overlay

    step = max(1, int(round(step)))
    small = strided_rows(labels, 0, labels.shape[0], step)  # a memory map's pages released as it goes
    ty, tx = int(round(origin[0] / step)), int(round(origin[1] / step))
    crop = thumbnail[ty : ty + small.shape[0], tx : tx + small.shape[1]]
    write_png(path, colour_overlay(crop, small[: crop.shape[0], : crop.shape[1]]))


def read_thumbnail(slide: Slide, max_pixels: int = THUMBNAIL_PIXELS) -> tuple[int, np.ndarray]:
    """(level, pixels) of the slide's largest level of at most ``max_pixels`` pixels, or of the
    next smaller level that can be read where that one has a damaged tile.

    Raises
    ------
    ImageReadError
        if no level from there down can be read.
    """
    first = slide.thumbnail_level(max_pixels)
    for k in range(first, len(slide.info.levels)):
        level = slide.level(k)
        try:
            return k, level[0 : level.shape[0], 0 : level.shape[1]]
        except ImageReadError:
            if k == len(slide.info.levels) - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class SlidePlan:
    """What every block of a slide is predicted with, decided once before any block: the input
    normalisation and the tissue mask (from the thumbnail, level ``thumbnail_level``), the nuclei's
    diameter (pixels, or None) and the scale, the watershed values at that scale, the pixel size
    (µm per level-0 pixel, or None), the block cache's key, and what could not be read so far.
    Small and picklable: the region tasks of a Dask cluster receive it
    (:mod:`~nucleiseg.inference.cluster`)."""

    params: InputParams
    tissue: TissueMap
    thumbnail_level: int
    diameter: float | None
    scale: float
    watershed: WatershedParams
    pixel_size: float | None
    key: str
    unreadable: list[str]


def slide_predictor(predictor: Predictor) -> Predictor:
    """``predictor``, or a copy of it (the same network) running at most :data:`SLIDE_TILE_BATCH`
    tiles at a time."""
    if predictor.batch_size <= SLIDE_TILE_BATCH:
        return predictor
    predictor = copy.copy(predictor)
    predictor.batch_size = SLIDE_TILE_BATCH
    return predictor


def plan_slide(predictor: Predictor, slide: Slide, options: PredictOptions) -> tuple[SlidePlan, np.ndarray]:
    """(:class:`SlidePlan`, the thumbnail's pixels) of ``slide`` under ``options``.

    Raises
    ------
    ImageReadError
        for a level or region the slide does not have (:func:`slide_window`), or when no
        thumbnail level can be read (:func:`read_thumbnail`).
    """
    window, d = slide_window(slide, options)
    k, thumbnail = read_thumbnail(slide)
    norm = predictor.config.normalization
    params = input_params(thumbnail, norm.channels, norm.p_low, norm.p_high)
    tissue = TissueMap(tissue_mask(thumbnail), slide.info.downsamples[k] / d, window.origin)
    unreadable: list[str] = []
    diameter, scale = _slide_scale(predictor, window, tissue, options, unreadable)
    watershed = scaled_watershed(options.watershed or predictor.watershed, scale)
    key = _cache_key(predictor, options, scale, watershed, params)
    pixel_size = options.pixel_size or slide.info.pixel_size
    return SlidePlan(params, tissue, k, diameter, scale, watershed, pixel_size, key, unreadable), thumbnail


def block_cache_folder(paths: OutputPaths) -> Path:
    """Where the finished blocks of the slide written to ``paths`` are kept until its outputs are
    (:class:`~nucleiseg.inference.blockwise.BlockCache`): ``.<ImageId>.blocks`` beside them."""
    return paths.labels.parent / f".{paths.labels.stem}.blocks"


def slide_blocks(predictor: Predictor, slide: Slide, options: PredictOptions, plan: SlidePlan) -> list[tuple[int, int]]:
    """(i, j) of every block of the slide's window that holds tissue, in raster order (the grid
    of :func:`~nucleiseg.inference.blockwise.predict_blockwise`)."""
    window, _ = slide_window(slide, options)
    return BlockGrid.of(predictor, window.shape, options.block_size, DEFAULT_HALO).blocks(plan.tissue)


def predict_slide_blocks(predictor: Predictor, slide: Slide, options: PredictOptions, plan: SlidePlan,
                         folder: Path, blocks: list[tuple[int, int]]) -> list[str]:
    """Segment blocks ``blocks`` of the slide into the block cache in ``folder`` (those already
    there are left), exactly as :func:`predict_slide` would: one region of a slide spread over
    several processes, whose :func:`predict_slide` then reads every block back. Returns one line
    per block skipped for a tile that could not be read.

    Raises
    ------
    ImageReadError
        for a level or region the slide does not have.
    """
    predictor = slide_predictor(predictor)
    window, _ = slide_window(slide, options)
    grid = BlockGrid.of(predictor, window.shape, options.block_size, DEFAULT_HALO)
    cache = BlockCache(folder, plan.key)
    unreadable = []
    for i, j in blocks:
        if cache.has(i, j):
            continue
        core, box = grid.boxes(i, j)
        try:
            _, objects, _ = segment_block(predictor, window, core, box, plan.params, plan.watershed, options.tta,
                                          plan.scale)
        except ImageReadError as exc:
            unreadable.append(str(exc))
            continue
        cache.put(i, j, objects)
    return unreadable


def predict_slide(predictor: Predictor, slide: Slide, paths: OutputPaths, options: PredictOptions,
                  progress: Progress = no_progress, resume: bool | None = None,
                  plan: SlidePlan | None = None) -> SlideResult:
    """Label every nucleus of ``slide`` (see the module docstring) into ``paths``.

    Parameters
    ----------
    predictor : the model.
    slide : an open :class:`~nucleiseg.data.slides.Slide`; level 0 is predicted.
    paths : where to write: ``labels`` (uint32 tiled pyramidal OME-TIFF),
        with ``options.geojson`` the GeoJSON (a ``.gz`` name is compressed), with
        ``options.measure`` the per-nucleus table, with ``options.overlay`` a thumbnail overlay.
    options : as for any image; ``pixel_size`` (µm) overrides the slide's own; ``level`` and
        ``region`` choose what is predicted (:func:`slide_window`). The label image has that
        level's pixels over the region; the GeoJSON and the table are in level-0 pixels.
    progress : wraps the loop over blocks (described "slide blocks"; the command line draws a
        bar with an ETA: blocks are of near-equal size, glass ones skipped at once).
    resume : read finished blocks back from the block cache (:func:`block_cache_folder`) rather
        than predict them again; None: with ``options.skip_existing``.
    plan : the slide's :func:`plan_slide` under ``predictor`` and ``options`` when already made
        (by a Dask cluster's plan task, whose regions filled the block cache under its key);
        None: planned here.

    Returns
    -------
    :class:`SlideResult`. Every file is written atomically: none is left half-written. A block
    with a tile that cannot be read or decoded is skipped and named in ``unreadable`` (its
    position in level-0 pixels), and the rest of the slide is predicted.

    Raises
    ------
    ImageReadError
        if no thumbnail level can be read (:func:`read_thumbnail`).
    """
    t0 = time.perf_counter()
    predictor = slide_predictor(predictor)
    window, d = slide_window(slide, options)
    if plan is None:
        plan, thumbnail = plan_slide(predictor, slide, options)
    elif options.overlay:
        _, thumbnail = read_thumbnail(slide)
    unreadable = list(plan.unreadable)
    cache = BlockCache(block_cache_folder(paths), plan.key,
                       fresh=not (options.skip_existing if resume is None else resume))
    with ExitStack() as stack:
        pool = stack.enter_context(postprocess_pool(postprocess_processes(options.watershed_processes,
                                                                         predictor.device)))
        writer = _BlockWriter(plan.pixel_size, window.origin, d, pool)
        if options.geojson:
            from ..geojson import feature_writer

            writer.add_features = stack.enter_context(feature_writer(paths.geojson))
        if options.measure:
            writer.add_rows = stack.enter_context(table_writer(paths.nuclei_table, COLUMNS))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{paths.labels.name}.",
                                                                      dir=paths.labels.parent)))
        writer.labels = np.memmap(folder / "labels.u32", np.uint32, "w+", shape=window.shape[:2])  # zeros
        _, stats = predict_blockwise(predictor, window, options.block_size, DEFAULT_HALO, plan.watershed,
                                     options.tta, out=writer.labels, progress=progress, scale=plan.scale,
                                     params=plan.params, tissue=plan.tissue, on_block=writer,
                                     on_read_error=lambda box, exc: unreadable.append(str(exc)), cache=cache,
                                     pool=pool)
        writer.flush(wait_all=True)
        if options.overlay:
            _write_overlay(paths.overlay, thumbnail, slide.info.downsamples[plan.thumbnail_level] / d, writer.labels,
                           window.origin)
        write_label_pyramid(paths.labels, writer.labels, plan.pixel_size * d if plan.pixel_size else None)
        writer.labels = None  # closes the map before its folder goes
    cache.remove()  # every output is in place: the finished blocks are no longer needed
    h, w = window.shape[:2]
    blocks = stats.blocks + stats.skipped
    areas = writer.areas
    table = {"area_px": np.concatenate(areas) if areas else np.zeros(0, np.int64)} if options.measure else None
    return SlideResult(stats.nuclei, stats, plan.diameter, plan.scale, plan.pixel_size, h * w / 1e6,
                       stats.blocks / blocks if blocks else 0.0, time.perf_counter() - t0, table, unreadable)


def predict_slide_file(predictor: Predictor, path: Path, paths: OutputPaths, options: PredictOptions,
                       progress: Progress = no_progress, resume: bool | None = None,
                       plan: SlidePlan | None = None) -> SlideResult:
    """:func:`predict_slide` on the slide file at ``path`` (opened and closed here).

    Raises
    ------
    ImageReadError
        if the file is not a readable slide (or its thumbnail level is damaged).
    """
    from ..data.slides import open_slide

    with open_slide(path) as slide:
        return predict_slide(predictor, slide, paths, options, progress, resume, plan)
