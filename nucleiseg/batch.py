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

from .data.images import read_image, read_label_image, write_label_image, write_label_png, write_png
from .measure import measure_nuclei, summary_row, write_table
from .data.rle import write_submission
from .data.sources import LabelSource, iter_image_paths
from .errors import NucleisegError
from .metrics import MatchingStats, dataset_table, image_score, matching_table
from .overlay import colour_overlay
from .predict import Predictor


@dataclass
class PredictResult:
    """Outcome of one image: ``status`` 'done', 'skipped' (already in OUT) or 'failed' (see ``error``)."""

    image_id: str
    status: str
    n_nuclei: int = 0
    seconds: float = 0.0
    error: str = ""


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

    Raises
    ------
    NucleisegError
        only for an input path that does not exist or holds no image; a failing image is
        reported in its :class:`PredictResult`.
    """
    out.mkdir(parents=True, exist_ok=True)
    results: list[PredictResult] = []
    summary: list[dict] = []
    if label_format not in ("tif", "png"):
        raise NucleisegError(f"label format must be 'tif' or 'png', got {label_format!r}")

    def labeled() -> Iterator[tuple[str, np.ndarray]]:
        seen: set[str] = set()
        for image_id, path in progress(list(iter_image_paths(inputs))):
            t0 = time.perf_counter()
            if image_id in seen:
                results.append(PredictResult(image_id, "failed", error=f"{path}: ImageId {image_id} appears twice"))
                continue
            seen.add(image_id)
            labels_path = out / f"{image_id}.{label_format}"
            overlay_path, table_path = out / f"{image_id}_overlay.png", out / f"{image_id}_nuclei.csv"
            wanted = [labels_path] + [overlay_path] * overlay + [table_path] * measure
            try:
                if skip_existing and all(p.is_file() for p in wanted):
                    labels = read_label_image(labels_path) if (rle_path is not None or measure) else None
                    if measure:
                        summary.append(summary_row(image_id, {"area_px": np.bincount(labels.ravel())[1:]}, None))
                    results.append(PredictResult(image_id, "skipped"))
                else:
                    image = read_image(path, channel)
                    labels = predictor.predict(image, tta=tta)
                    if label_format == "tif":
                        write_label_image(labels_path, labels)
                    else:
                        write_label_png(labels_path, labels)
                    if overlay:
                        write_png(overlay_path, colour_overlay(image, labels))
                    seconds = time.perf_counter() - t0
                    if measure:
                        table = measure_nuclei(labels, image, pixel_size)
                        write_table(table_path, table)
                        summary.append(summary_row(image_id, table, seconds))
                    results.append(PredictResult(image_id, "done", int(labels.max(initial=0)), seconds))
            except NucleisegError as exc:
                results.append(PredictResult(image_id, "failed", error=str(exc)))
                continue
            if labels is not None:
                yield image_id, labels

    if rle_path is not None:
        write_submission(rle_path, labeled())
    else:
        for _ in labeled():
            pass
    if measure:
        write_table(out / "summary.csv", summary)
    return results


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

