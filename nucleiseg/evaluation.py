"""Scoring label images against ground truth, image by image and over a dataset, and scoring a
model on named benchmark sets (``nucleiseg evaluate``).

Truth and predictions come from any :class:`~nucleiseg.data.sources.LabelSource` (a DSB2018
folder, a Kaggle CSV, a folder of label images), matched by ImageId. Every image gets its DSB2018 score,
AP at IoU 0.5, Aggregated Jaccard Index and panoptic quality (:func:`nucleiseg.metrics.image_metrics`).
Dataset values are the mean over images of the image values (:data:`AGGREGATION`), as the
DSB2018 score is defined and as the MoNuSeg challenge averaged AJI; the per-threshold table also
gives the counts summed over images with the rates recomputed from them (StarDist's
``matching_dataset``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data.layouts import Collection
from .data.provenance import Provenance
from .data.sources import LabelSource
from .errors import NucleisegError
from .metrics import MatchingStats, dataset_table, image_metrics
from .progress import Progress, no_progress

#: How each dataset value is computed from the image values (stated in ``score --json``).
AGGREGATION = {"score": "mean over images of the DSB2018 image score",
               "ap50": "mean over images of TP / (TP + FP + FN) at IoU > 0.5",
               "aji": "mean over images of the image AJI",
               "pq": "mean over images of the image panoptic quality (IoU > 0.5)",
               "per_threshold": "counts summed over images, rates recomputed from them; mean_image_accuracy: "
                                "mean over images"}


@dataclass
class ScoreReport:
    """Dataset score, per-threshold table, and per-image scores of a scoring run.

    Attributes
    ----------
    score : float
        Mean DSB2018 score over the scored images (NaN when none was scored).
    n_images : int
        Images scored.
    ap50, aji, pq : float
        Means over the scored images of AP at IoU 0.5, AJI and panoptic quality.
    n_true, n_pred : int
        Nuclei in the truth and in the predictions of the scored images.
    per_threshold : list of dict
        One row per IoU threshold: the :class:`~nucleiseg.metrics.MatchingStats` fields from
        counts summed over images, and ``mean_image_accuracy``, the mean over images of
        TP / (TP + FP + FN) at that threshold (their mean over thresholds is ``score``).
    per_image : list of dict
        ``image_id``, ``score``, ``ap50``, ``aji``, ``pq``, ``n_true``, ``n_pred`` per scored image.
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
    ap50: float = float("nan")
    aji: float = float("nan")
    pq: float = float("nan")
    n_true: int = 0
    n_pred: int = 0
    per_image: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "aggregation": AGGREGATION}


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
            m = image_metrics(y_true, y_pred)
        except (NucleisegError, ValueError) as exc:
            failed.append({"image_id": image_id, "error": str(exc)})
            continue
        tables.append(m.table)
        per_image.append({"image_id": image_id, "score": m.dsb_score, "ap50": m.ap50, "aji": m.aji, "pq": m.pq,
                          "n_true": m.n_true, "n_pred": m.n_pred})
    per_threshold = [row.to_dict() | {"mean_image_accuracy": float(np.mean([t[i].accuracy for t in tables]))}
                     for i, row in enumerate(dataset_table(tables) if tables else [])]

    def mean(key: str) -> float:
        return float(np.mean([p[key] for p in per_image])) if per_image else float("nan")

    return ScoreReport(mean("score"), len(per_image), per_threshold, mean("ap50"), mean("aji"), mean("pq"),
                       sum(p["n_true"] for p in per_image), sum(p["n_pred"] for p in per_image), per_image, missing,
                       sorted(pred_ids - set(true_ids)), failed)


def format_table(report: ScoreReport) -> str:
    """The per-threshold table and the AP / AJI / PQ line as aligned text."""
    head = f"{'IoU>':>5} {'DSB':>6} {'TP':>7} {'FP':>7} {'FN':>7} {'prec':>6} {'recall':>6} {'F1':>6} {'mIoU':>6} {'PQ':>6}"
    lines = [head]
    for r in report.per_threshold:
        lines.append(f"{r['thresh']:>5.2f} {r['mean_image_accuracy']:>6.3f} {r['tp']:>7d} {r['fp']:>7d} {r['fn']:>7d} "
                     f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f} {r['mean_matched_score']:>6.3f} "
                     f"{r['panoptic_quality']:>6.3f}")
    lines.append(f"means over {report.n_images} images: DSB {report.score:.4f}  AP@0.5 {report.ap50:.4f}  "
                 f"AJI {report.aji:.4f}  PQ {report.pq:.4f}  ({report.n_true} true, {report.n_pred} predicted nuclei)")
    return "\n".join(lines)


# ---------------------------------------------------------------- nucleiseg evaluate


@dataclass(frozen=True)
class EvaluationSet:
    """Images of one collection to score a method on.

    Attributes
    ----------
    name : str
        e.g. "MoNuSeg 2018 test".
    collection : Collection
        Where the images and their annotations are read from.
    image_ids : list of str
        Which of its images.
    provenance : Provenance
        The collection's source and licence.
    chosen : str
        How the images were chosen, in words.
    """

    name: str
    collection: Collection
    image_ids: list[str]
    provenance: Provenance
    chosen: str


#: Environment variable naming a folder that holds ``dsb2018/stage1_train`` and ``monuseg2018/``
#: (with ``train/`` and ``test/``), the collections :func:`evaluation_sets` looks for.
DATA_ENV = "NUCLEISEG_DATA"


def data_folders(dsb2018: str | os.PathLike | None = None, monuseg: str | os.PathLike | None = None
                 ) -> tuple[Path | None, Path | None]:
    """The DSB2018 stage1_train folder and the MoNuSeg 2018 folder to evaluate on: as given, else
    under ``$NUCLEISEG_DATA`` (``dsb2018/stage1_train``, ``monuseg2018``) when they exist there."""
    root = Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None
    if dsb2018 is None and root is not None and (root / "dsb2018" / "stage1_train").is_dir():
        dsb2018 = root / "dsb2018" / "stage1_train"
    if monuseg is None and root is not None and (root / "monuseg2018").is_dir():
        monuseg = root / "monuseg2018"
    return (Path(dsb2018) if dsb2018 else None), (Path(monuseg) if monuseg else None)


def evaluation_sets(dsb2018: str | os.PathLike | None = None, monuseg: str | os.PathLike | None = None
                    ) -> list[EvaluationSet]:
    """The benchmark sets: the bundled samples (always); the DSB2018 validation split (with
    ``dsb2018``, a stage1_train folder); the MoNuSeg 2018 train validation subset and the MoNuSeg
    2018 test set (with ``monuseg``, a folder holding ``train/`` and ``test/`` as distributed).

    Raises
    ------
    NucleisegError
        if a given folder does not hold the collection it should.
    """
    from .data.layouts import require_collection
    from .data.provenance import DSB2018, identify, monuseg2018_validation_ids
    from .data.sources import bundled_samples_dir
    from .data.split import validation_ids

    samples = require_collection(bundled_samples_dir())
    sets = [EvaluationSet("bundled samples", samples, samples.ids(), DSB2018,
                          "the 8 images that ship with nucleiseg (from the DSB2018 validation split)")]
    dsb2018, monuseg = data_folders(dsb2018, monuseg)
    if dsb2018 is not None:
        found = require_collection(dsb2018)
        ids = sorted(validation_ids() & set(found.ids()))
        if not ids:
            raise NucleisegError(f"{dsb2018}: none of the DSB2018 validation images; is it stage1_train?")
        sets.append(EvaluationSet("DSB2018 validation", found, ids, DSB2018,
                                  "the committed stratified 15% split of stage1_train (never trained on)"))
    if monuseg is not None:
        train, test = require_collection(Path(monuseg) / "train"), require_collection(Path(monuseg) / "test")
        held = sorted(monuseg2018_validation_ids() & set(train.ids()))
        sets.append(EvaluationSet("MoNuSeg 2018 validation", train, held, identify(train.root, held),
                                  "one training image per organ, first by SHA-1 of its name (held out of training)"))
        sets.append(EvaluationSet("MoNuSeg 2018 test", test, test.ids(), identify(test.root, test.ids()),
                                  "the official test set (organs unseen in train included); never trained or tuned on"))
    return sets


@dataclass
class EvaluationRow:
    """Scores of one method on one set (``group`` "all", or one image modality of the set).

    Dataset values are means over the group's images; ``seconds_per_mpx`` is the method's time
    (image in memory to label image) per megapixel, over the group's images.
    """

    set: str
    method: str
    group: str
    n_images: int
    n_nuclei: int
    dsb: float
    ap50: float
    aji: float
    pq: float
    seconds_per_mpx: float


def evaluate_method(method: str, segment, eval_set: EvaluationSet,
                    progress: Progress = no_progress) -> list[EvaluationRow]:
    """Score ``segment`` (image -> label image) on ``eval_set``: a row for all its images, and one
    per image modality when it has several. An image that cannot be read is skipped and logged."""
    import logging
    import time

    from .data.split import modality

    per_image = []
    for item in progress(eval_set.collection.items(eval_set.image_ids), len(eval_set.image_ids),
                         f"{method} on {eval_set.name}"):
        if isinstance(item, NucleisegError):
            logging.getLogger(__name__).warning("skipped: %s", item)
            continue
        t0 = time.perf_counter()
        labels = segment(item.image)
        seconds = time.perf_counter() - t0
        m = image_metrics(item.labels, labels)
        per_image.append((modality(item.image), m, seconds, item.labels.size / 1e6))
    groups = {"all": per_image}
    modalities = sorted({g for g, *_ in per_image})
    if len(modalities) > 1:
        groups |= {g: [p for p in per_image if p[0] == g] for g in modalities}
    rows = []
    for group, images in groups.items():
        metrics = [m for _, m, *_ in images]
        rows.append(EvaluationRow(eval_set.name, method, group, len(images), sum(m.n_true for m in metrics),
                                  *(float(np.mean([getattr(m, k) for m in metrics])) if metrics else float("nan")
                                    for k in ("dsb_score", "ap50", "aji", "pq")),
                                  sum(s for *_, s, _ in images) / max(sum(mp for *_, mp in images), 1e-12)))
    return rows


def format_evaluation(rows: list[EvaluationRow], markdown: bool = False) -> str:
    """The evaluation table as aligned text, or as a Markdown table."""
    head = ["set", "method", "images", "nuclei", "DSB", "AP@0.5", "AJI", "PQ", "s/MPx"]
    body = [[r.set if r.group == "all" else (f"{r.set}: {r.group}" if markdown else f"  {r.group}"), r.method,
             str(r.n_images), str(r.n_nuclei),
             f"{r.dsb:.3f}", f"{r.ap50:.3f}", f"{r.aji:.3f}", f"{r.pq:.3f}", f"{r.seconds_per_mpx:.2f}"]
            for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(c.strip() for c in row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in [head] + body)
