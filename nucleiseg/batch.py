"""Batch jobs over many files: prediction into an output folder, and scoring two label sources.

Both go on past a bad item: it is reported with its reason, and every finished output stays.
Outputs are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

import tifffile

from .blockwise import DEFAULT_BLOCK_SIZE, DEFAULT_HALO, is_huge, predict_blockwise
from .data.images import atomic_path, read_image, read_label_image, write_label_image, write_label_png, write_png
from .measure import measure_nuclei, summary_row, write_table
from .data.rle import write_submission
from .data.sources import LabelSource, iter_image_paths
from .errors import NucleisegError
from .metrics import MatchingStats, dataset_table, image_score, matching_table
from .overlay import colour_overlay
from .predict import Predictor


@dataclass
class PredictResult:
    """Outcome of one image: ``status`` 'done', 'skipped' (already in OUT) or 'failed' (see ``error``).

    ``summary``: its row of ``summary.csv`` when measurements were asked for."""

    image_id: str
    status: str
    n_nuclei: int = 0
    seconds: float = 0.0
    error: str = ""
    summary: dict | None = None


@dataclass
class PredictOptions:
    """What to write for each image (see :func:`predict_files`)."""

    overlay: bool = True
    tta: bool = False
    skip_existing: bool = False
    measure: bool = False
    pixel_size: float | None = None
    label_format: str = "tif"
    channel: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    keep_labels: bool = False  # read the labels of skipped images back (for a CSV)

    def __post_init__(self) -> None:
        if self.label_format not in ("tif", "png"):
            raise NucleisegError(f"label format must be 'tif' or 'png', got {self.label_format!r}")

    def outputs(self, out: Path, image_id: str) -> list[Path]:
        """The files one finished image has in ``out``; the label image first."""
        return ([out / f"{image_id}.{self.label_format}"] + [out / f"{image_id}_overlay.png"] * self.overlay
                + [out / f"{image_id}_nuclei.csv"] * self.measure)


def predict_one(predictor: Predictor, image_id: str, path: Path, out: Path, opts: PredictOptions
                ) -> tuple[PredictResult, np.ndarray | None]:
    """Predict one image into ``out`` (each file written atomically); never raises for a bad image.

    Returns (result, labels): labels (H, W) when the image was done, or skipped with
    ``opts.keep_labels`` or ``opts.measure``; None otherwise.
    """
    t0 = time.perf_counter()
    labels_path, *_ = wanted = opts.outputs(out, image_id)
    overlay_path, table_path = out / f"{image_id}_overlay.png", out / f"{image_id}_nuclei.csv"
    try:
        if opts.skip_existing and all(p.is_file() for p in wanted):
            labels = read_label_image(labels_path) if (opts.keep_labels or opts.measure) else None
            row = (summary_row(image_id, {"area_px": np.bincount(labels.ravel())[1:]}, None)
                   if opts.measure else None)
            return PredictResult(image_id, "skipped", summary=row), labels
        image = read_image(path, opts.channel)
        if is_huge(image.shape, opts.block_size) and opts.label_format == "tif":
            labels = _predict_huge_to_tiff(predictor, image, labels_path, opts.block_size, opts.tta)
        else:
            if is_huge(image.shape, opts.block_size):
                labels = predict_blockwise(predictor, image, opts.block_size, DEFAULT_HALO, opts.tta)[0]
            else:
                labels = predictor.predict(image, tta=opts.tta)
            if opts.label_format == "tif":
                write_label_image(labels_path, labels)
            else:
                write_label_png(labels_path, labels)
        if opts.overlay:
            f = max(1, -(-max(image.shape[:2]) // 4096))  # downscale huge images' overlays
            write_png(overlay_path, colour_overlay(image[::f, ::f], labels[::f, ::f]))
        seconds = time.perf_counter() - t0
        row = None
        if opts.measure:
            table = measure_nuclei(labels, image, opts.pixel_size)
            write_table(table_path, table)
            row = summary_row(image_id, table, seconds)
        return PredictResult(image_id, "done", int(labels.max(initial=0)), seconds, summary=row), labels
    except NucleisegError as exc:
        return PredictResult(image_id, "failed", error=str(exc)), None


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


def predict_files(
    inputs: list[Path],
    out: Path,
    predictor: Predictor,
    rle_path: Path | None = None,
    overlay: bool = True,
    tta: bool = False,
    skip_existing: bool = False,
    measure: bool = False,
    pixel_size: float | None = None,
    label_format: str = "tif",
    channel: int | None = None,
    progress: Callable[[Iterable], Iterator] = iter,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> list[PredictResult]:
    """Predict every image of ``inputs`` (see :func:`iter_image_paths`) into ``out``.

    Writes ``out/<ImageId>.tif`` (uint16 labels) and ``out/<ImageId>_overlay.png``, each
    atomically; with ``rle_path`` also a Kaggle submission CSV of the images that succeeded,
    streamed (one label image in memory at a time) and renamed into place at the end.
    ``tta`` averages the 8 dihedral transforms. ``skip_existing`` leaves images whose outputs
    are already in ``out`` (a killed run resumed); their labels are read back for the CSV.
    ``measure`` also writes ``out/<ImageId>_nuclei.csv`` (:mod:`nucleiseg.measure`, areas in
    square micrometres too with ``pixel_size``) and ``out/summary.csv`` (one row per image).
    ``label_format``: "tif" (uint16 TIFF) or "png" (16-bit PNG). ``channel``: predict on one
    page of multi-page TIFFs or one channel of multi-channel images (see :func:`read_image`).
    Images with a side longer than 2 x ``block_size`` are predicted block by block
    (:mod:`nucleiseg.blockwise`); their TIFF label image (uint32) is written through a memory
    map and their overlay is downscaled to at most 4096 px on the long side.

    Raises
    ------
    NucleisegError
        only for an input path that does not exist or holds no image, or a bad label format; a
        failing image is reported in its :class:`PredictResult`.
    """
    opts = PredictOptions(overlay, tta, skip_existing, measure, pixel_size, label_format, channel, block_size,
                          keep_labels=rle_path is not None)
    out.mkdir(parents=True, exist_ok=True)
    todo, results = unique_inputs(inputs)

    def labeled() -> Iterator[tuple[str, np.ndarray]]:
        for image_id, path in progress(todo):
            result, labels = predict_one(predictor, image_id, path, out, opts)
            results.append(result)
            if labels is not None:
                yield image_id, labels

    if rle_path is not None:
        write_submission(rle_path, labeled())
    else:
        for _ in labeled():
            pass
    finish_summary(out, results, opts)
    return results


def finish_summary(out: Path, results: list[PredictResult], opts: PredictOptions) -> None:
    """Write ``out/summary.csv`` (with ``opts.measure``) from the results' rows, in ImageId order
    of the results."""
    if opts.measure:
        write_table(out / "summary.csv", [r.summary for r in results if r.summary is not None])


def _predict_huge_to_tiff(predictor: Predictor, image: np.ndarray, path: Path, block_size: int, tta: bool
                          ) -> np.ndarray:
    """Block-wise labels written straight into a memory-mapped uint32 TIFF (renamed into place
    when complete); returns the file, memory-mapped read-only."""
    with atomic_path(path) as tmp:
        mapped = tifffile.memmap(tmp, shape=image.shape[:2], dtype=np.uint32, photometric="minisblack")
        predict_blockwise(predictor, image, block_size, DEFAULT_HALO, tta, out=mapped)
        mapped.flush()
        del mapped
    return tifffile.memmap(path, mode="r")


@dataclass
class ScoreReport:
    """Dataset score, per-threshold table, and per-image scores of a scoring run."""

    score: float
    n_images: int
    per_threshold: list[dict]
    per_image: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"score": self.score, "n_images": self.n_images, "per_threshold": self.per_threshold,
                "per_image": self.per_image, "missing": self.missing, "extra": self.extra, "failed": self.failed}


def score_sources(true: LabelSource, pred: LabelSource, progress: Callable[[Iterable], Iterator] = iter) -> ScoreReport:
    """Score every ImageId of ``true`` against ``pred`` (GUIDE section 2).

    An ImageId of ``true`` with no prediction is scored against an empty prediction and listed
    in ``missing``; predictions with no truth are listed in ``extra``; images that fail to read
    are listed in ``failed`` and left out of the score.

    ``per_threshold`` rows: ``dsb_precision`` is the mean over images of TP / (TP + FP + FN) at
    that threshold (their mean is the dataset score); the counts are summed over images and the
    other rates recomputed from them (StarDist's ``matching_dataset``).
    """
    pred_ids = set(pred.ids())
    tables: list[list[MatchingStats]] = []
    per_image, missing, failed = [], [], []
    true_ids = true.ids()
    for image_id in progress(true_ids):
        try:
            y_true = true.get(image_id)
            if image_id in pred_ids:
                y_pred = pred.get(image_id, shape=y_true.shape)
                if y_pred.shape != y_true.shape:
                    raise NucleisegError(f"{image_id}: prediction is {y_pred.shape}, truth is {y_true.shape}")
            else:
                missing.append(image_id)
                y_pred = np.zeros_like(y_true)
            table = matching_table(y_true, y_pred)
        except (NucleisegError, ValueError) as exc:
            failed.append({"image_id": image_id, "error": str(exc)})
            continue
        tables.append(table)
        per_image.append({"image_id": image_id, "score": image_score(table),
                          "n_true": table[0].tp + table[0].fn, "n_pred": table[0].tp + table[0].fp})
    summed = dataset_table(tables) if tables else []
    per_threshold = []
    for i, row in enumerate(summed):
        d = row.to_dict()
        d.pop("matched_iou_sum")
        d["dsb_precision"] = float(np.mean([t[i].dsb_precision for t in tables]))
        per_threshold.append(d)
    score = float(np.mean([p["score"] for p in per_image])) if per_image else float("nan")
    return ScoreReport(score, len(per_image), per_threshold, per_image, missing,
                       sorted(pred_ids - set(true_ids)), failed)


def format_table(report: ScoreReport) -> str:
    """The per-threshold table as aligned text."""
    head = f"{'IoU>':>5} {'DSB':>6} {'TP':>7} {'FP':>7} {'FN':>7} {'prec':>6} {'recall':>6} {'F1':>6} {'mIoU':>6} {'PQ':>6}"
    lines = [head]
    for r in report.per_threshold:
        lines.append(f"{r['threshold']:>5.2f} {r['dsb_precision']:>6.3f} {r['tp']:>7d} {r['fp']:>7d} {r['fn']:>7d} "
                     f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f} {r['mean_matched_iou']:>6.3f} "
                     f"{r['panoptic_quality']:>6.3f}")
    return "\n".join(lines)

