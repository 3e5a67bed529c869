"""Scoring label images against ground truth, image by image and over a dataset.

Truth and predictions come from any :class:`~nucleiseg.data.sources.LabelSource` (a DSB2018
folder, a Kaggle CSV, a folder of label images), matched by ImageId. The dataset score is the
Kaggle DSB2018 one: the mean over images of each image's score (:mod:`nucleiseg.metrics`);
the per-threshold table also gives the counts summed over images with the rates recomputed
from them (StarDist's ``matching_dataset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data.sources import LabelSource
from .errors import NucleisegError
from .metrics import MatchingStats, dataset_table, dsb_score_from_table, matching_table
from .progress import Progress, no_progress


@dataclass
class ScoreReport:
    """Dataset score, per-threshold table, and per-image scores of a scoring run.

    Attributes
    ----------
    score : float
        Mean DSB2018 score over the scored images (NaN when none was scored).
    n_images : int
        Images scored.
    per_threshold : list of dict
        One row per IoU threshold: the :class:`~nucleiseg.metrics.MatchingStats` fields from
        counts summed over images, and ``mean_image_accuracy``, the mean over images of
        TP / (TP + FP + FN) at that threshold (their mean over thresholds is ``score``).
    per_image : list of dict
        ``image_id``, ``score``, ``n_true``, ``n_pred`` per scored image.
    missing : list of str
        ImageIds of the truth without a prediction (scored as empty predictions).
    extra : list of str
        ImageIds of predictions without truth (ignored).
    failed : list of dict
        ``image_id`` and ``error`` of images that could not be read (left out of the score).
    """

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


def score_sources(true: LabelSource, pred: LabelSource, progress: Progress = no_progress) -> ScoreReport:
    """Score every ImageId of ``true`` against ``pred`` with the DSB2018 metric.

    An ImageId of ``true`` with no prediction is scored against an empty prediction and listed
    in ``missing``; predictions with no truth are listed in ``extra``; images that fail to read
    are listed in ``failed`` and left out of the score. Never raises for one bad image.
    """
    pred_ids = set(pred.ids())
    tables: list[list[MatchingStats]] = []
    per_image, missing, failed = [], [], []
    true_ids = true.ids()
    for image_id in progress(true_ids, len(true_ids), "score"):
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
        per_image.append({"image_id": image_id, "score": dsb_score_from_table(table),
                          "n_true": table[0].n_true, "n_pred": table[0].n_pred})
    per_threshold = [row.to_dict() | {"mean_image_accuracy": float(np.mean([t[i].accuracy for t in tables]))}
                     for i, row in enumerate(dataset_table(tables) if tables else [])]
    score = float(np.mean([p["score"] for p in per_image])) if per_image else float("nan")
    return ScoreReport(score, len(per_image), per_threshold, per_image, missing,
                       sorted(pred_ids - set(true_ids)), failed)


def format_table(report: ScoreReport) -> str:
    """The per-threshold table as aligned text."""
    head = f"{'IoU>':>5} {'DSB':>6} {'TP':>7} {'FP':>7} {'FN':>7} {'prec':>6} {'recall':>6} {'F1':>6} {'mIoU':>6} {'PQ':>6}"
    lines = [head]
    for r in report.per_threshold:
        lines.append(f"{r['thresh']:>5.2f} {r['mean_image_accuracy']:>6.3f} {r['tp']:>7d} {r['fp']:>7d} {r['fn']:>7d} "
                     f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f} {r['mean_matched_score']:>6.3f} "
                     f"{r['panoptic_quality']:>6.3f}")
    return "\n".join(lines)
