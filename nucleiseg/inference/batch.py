"""Prediction of many files into an output folder, going on past bad images.

A bad image is reported in its :class:`PredictResult` with the reason, and every finished output
stays. Every output is written atomically (temporary name, then rename, :mod:`nucleiseg.io`), so
a killed run leaves only complete files and ``--skip-existing`` resumes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.images import read_image, read_label_image
from ..data.rle import write_submission
from ..data.slides import is_slide
from ..data.sources import iter_image_paths
from ..errors import ImageReadError, NucleisegError
from ..io import write_label_memmap, write_labels, write_png, write_table
from ..measure import measure_nuclei, summary_row
from ..overlay import colour_overlay
from ..progress import Progress, no_progress
from .blockwise import DEFAULT_HALO, is_huge, postprocess_pool, postprocess_processes, predict_blockwise
from .predictor import PredictOptions, Predictor, scaled_watershed

#: Overlays of huge images are downscaled to at most this many pixels on the long side.
MAX_OVERLAY_SIDE = 4096


@dataclass
class PredictResult:
    """Outcome of one image: ``status`` 'done', 'skipped' (already in OUT) or 'failed' (see ``error``;
    a 'done' slide with unreadable tiles names them there, their blocks left without nuclei).

    ``summary``: its row of ``summary.csv`` when measurements were asked for; ``diameter`` and
    ``scale``: the nucleus diameter (pixels) and resize factor it was predicted with
    (:class:`~nucleiseg.inference.predictor.Segmentation`)."""

    image_id: str
    status: str
    n_nuclei: int = 0
    seconds: float = 0.0
    error: str = ""
    summary: dict | None = None
    diameter: float | None = None
    scale: float = 1.0


def wanted_outputs(out: Path, image_id: str, options: PredictOptions) -> list[Path]:
    """The files one finished image has in ``out`` under ``options``; the label image first."""
    paths = options.paths(out, image_id)
    return ([paths.labels] + [paths.overlay] * options.overlay + [paths.nuclei_table] * options.measure
            + [paths.geojson] * options.geojson)


def predict_one(predictor: Predictor, image_id: str, path: Path, out: Path, options: PredictOptions,
                keep_labels: bool = False, progress: Progress = no_progress,
                slide_plan=None) -> tuple[PredictResult, np.ndarray | None]:
    """Predict one image into ``out`` (each file written atomically); never raises for a bad image.
    ``progress`` wraps the blocks of a slide (:mod:`~nucleiseg.inference.slide`); ``slide_plan``
    (a :class:`~nucleiseg.inference.slide.SlidePlan` made for this slide and ``options``, e.g. by a
    Dask cluster's plan task) is used rather than planned again, and the blocks already in the
    slide's block cache (those its regions predicted) are read back, not predicted.

    Returns (result, labels): labels (H, W) when the image was done, or skipped with
    ``keep_labels`` (read back, e.g. for a CSV) or ``options.measure``; None otherwise.
    """
    t0 = time.perf_counter()
    paths = options.paths(out, image_id)
    try:
        if options.skip_existing and all(p.is_file() for p in wanted_outputs(out, image_id, options)):
            labels = read_label_image(paths.labels) if (keep_labels or options.measure) else None
            row = (summary_row(image_id, {"area_px": np.bincount(labels.ravel())[1:]}, None)
                   if options.measure else None)
            return PredictResult(image_id, "skipped", summary=row), labels
        if is_slide(path):
            return _predict_slide(predictor, image_id, path, out, options, t0, progress, slide_plan), None
        if options.level or options.region is not None:
            raise ImageReadError(f"{path}: not a slide (a pyramidal or tiled TIFF); --level and --region apply "
                                 f"to slides only")
        image = read_image(path, options.channel)
        if is_huge(image.shape, options.block_size) and options.label_format == "tif":
            diameter, scale = predictor.scale_for(image, options)
            labels = _predict_huge_to_tiff(predictor, image, paths.labels, options, scale)
        else:
            labels, diameter, scale = predictor.segment(image, options)
            write_labels(paths.labels, labels, options.pixel_size)
        if options.overlay:
            f = max(1, -(-max(image.shape[:2]) // MAX_OVERLAY_SIDE))
            write_png(paths.overlay, colour_overlay(image[::f, ::f], labels[::f, ::f]))
        seconds = time.perf_counter() - t0
        row = None
        table = measure_nuclei(labels, image, options.pixel_size) if options.measure or options.geojson else None
        if options.measure:
            write_table(paths.nuclei_table, table)
            row = summary_row(image_id, table, seconds) | {"diameter_px": diameter, "scale": scale}
        if options.geojson:
            from ..geojson import write_geojson

            write_geojson(paths.geojson, labels, table)
        return PredictResult(image_id, "done", int(labels.max(initial=0)), seconds, summary=row, diameter=diameter,
                             scale=scale), labels
    except NucleisegError as exc:
        return PredictResult(image_id, "failed", error=str(exc)), None


def _predict_slide(predictor: Predictor, image_id: str, path: Path, out: Path, options: PredictOptions,
                   t0: float, progress: Progress, slide_plan=None) -> PredictResult:
    """A whole-slide image (:func:`~nucleiseg.data.slides.is_slide`), read lazily and written as it
    goes (:mod:`~nucleiseg.inference.slide`)."""
    from .slide import predict_slide_file

    if options.label_format != "tif":
        raise ImageReadError(f"{path}: a slide's labels are written as TIFF (uint32, pyramidal); "
                             f"--format {options.label_format} is for ordinary images")
    if options.channel is not None:
        raise ImageReadError(f"{path}: --channel does not apply to a slide (its RGB or gray level 0 is predicted)")
    result = predict_slide_file(predictor, path, options.paths(out, image_id), options, progress,
                                resume=options.skip_existing or slide_plan is not None, plan=slide_plan)
    seconds = time.perf_counter() - t0
    row = None
    if options.measure:
        row = summary_row(image_id, result.table, seconds) | {"diameter_px": result.diameter, "scale": result.scale}
    error = ""
    if result.unreadable:
        error = f"{len(result.unreadable)} blocks skipped, unreadable: " + "; ".join(result.unreadable)
    return PredictResult(image_id, "done", result.n_nuclei, seconds, error, row, result.diameter, result.scale)


def unique_inputs(inputs: list[Path]) -> tuple[list[tuple[str, Path]], list[PredictResult]]:
    """(ImageId, path) of every input image, and a failed result for each repeated ImageId
    (a.png and a.tif would write the same outputs)."""
    seen: set[str] = set()
    todo, repeated = [], []
    for image_id, path in iter_image_paths(inputs):
        if image_id in seen:
            repeated.append(PredictResult(image_id, "failed", error=f"{path}: ImageId {image_id} appears twice"))
        else:
            seen.add(image_id)
            todo.append((image_id, path))
    return todo, repeated


def predict_files(inputs: list[Path], out: Path, predictor: Predictor, options: PredictOptions | None = None,
                  rle_path: Path | None = None, progress: Progress = no_progress) -> list[PredictResult]:
    """Predict every image of ``inputs`` (see :func:`~nucleiseg.data.sources.iter_image_paths`)
    into ``out``.

    Writes ``out/<ImageId>.tif`` (uint16 labels; uint32 past 65,535 nuclei; ``.png`` with
    ``options.label_format="png"``) and ``out/<ImageId>_overlay.png``, each atomically; with
    ``rle_path`` also a Kaggle submission CSV of the images that succeeded, streamed (one label
    image in memory at a time) and renamed into place at the end. ``options`` (see
    :class:`~nucleiseg.inference.predictor.PredictOptions`): watershed values, TTA, channel,
    block size, and what to write; ``skip_existing`` leaves images whose outputs are already in
    ``out`` (a killed run resumed; their labels are read back for the CSV); ``measure`` also
    writes ``out/<ImageId>_nuclei.csv`` (:mod:`nucleiseg.measure`) and ``out/summary.csv``.
    Images with a side longer than 2 x ``block_size`` are predicted block by block
    (:mod:`~nucleiseg.inference.blockwise`); their TIFF label image (uint32) is written through
    a memory map and their overlay is downscaled to at most 4096 px on the long side.

    Raises
    ------
    NucleisegError
        only for an input path that does not exist or holds no image; a failing image is
        reported in its :class:`PredictResult`.
    """
    options = options or PredictOptions()
    out.mkdir(parents=True, exist_ok=True)
    todo, results = unique_inputs(inputs)

    def labeled() -> Iterator[tuple[str, np.ndarray]]:
        for image_id, path in progress(todo, len(todo), "predict"):
            result, labels = predict_one(predictor, image_id, path, out, options, rle_path is not None, progress)
            results.append(result)
            if labels is not None:
                yield image_id, labels

    if rle_path is not None:
        write_submission(rle_path, labeled())
    else:
        for _ in labeled():
            pass
    finish_summary(out, results, options)
    return results


def finish_summary(out: Path, results: list[PredictResult], options: PredictOptions) -> None:
    """Write ``out/summary.csv`` (with ``options.measure``) from the results' rows, in their order."""
    if options.measure:
        write_table(out / "summary.csv", [r.summary for r in results if r.summary is not None])


def _predict_huge_to_tiff(predictor: Predictor, image: np.ndarray, path: Path, options: PredictOptions,
                          scale: float) -> np.ndarray:
    """Block-wise labels written straight into a memory-mapped uint32 TIFF
    (:func:`~nucleiseg.io.write_label_memmap`); returns the file, memory-mapped read-only."""
    watershed = scaled_watershed(options.watershed or predictor.watershed, scale)

    def fill(mapped: np.ndarray) -> None:
        with postprocess_pool(postprocess_processes(options.watershed_processes, predictor.device)) as pool:
            predict_blockwise(predictor, image, options.block_size, DEFAULT_HALO, watershed, options.tta, out=mapped,
                              scale=scale, pool=pool)

    return write_label_memmap(path, image.shape[:2], fill, options.pixel_size)
