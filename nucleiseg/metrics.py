"""The DSB2018 score and a StarDist-style matching table.

Source: the Kaggle Data Science Bowl 2018 evaluation ("mean average precision at different
intersection over union (IoU) thresholds", https://www.kaggle.com/competitions/data-science-bowl-2018/overview/evaluation;
Caicedo et al., Nature Methods 16, 1247-1253, 2019). For one image, IoU(A, B) = |A & B| / |A | B|
for every true object A and predicted object B. At threshold t a true object is a true positive
(TP) when a predicted object has IoU > t with it (strictly greater); unmatched predicted objects
are false positives (FP), unmatched true objects false negatives (FN). Because t >= 0.5 each
object matches at most one other. The image score is the mean over t = 0.50, 0.55, ..., 0.95 of
TP / (TP + FP + FN) (StarDist calls this ratio *accuracy*); the dataset score is the mean of
image scores.

Empty cases: no true and no predicted object gives 1.0 at every threshold; one side empty
gives 0.0.

All IoUs come from the histogram of (true label, predicted label) pairs over the pixels where
both are non-zero, built in one numba pass (a counting sort by true label, then a scratch count
per true object): time and memory O(pixels + labels + overlapping pairs), never K_true x K_pred.
Labels may have gaps; label values far above the pixel count are first compacted with
np.unique. Threshold tests are exact integer arithmetic (20 * |A & B| > k * |A | B| for
t = k / 20), so an IoU of exactly 0.5 is not a match at t = 0.5.

The matching record has the fields of StarDist's ``matching`` (``stardist/matching.py``) where
they mean the same thing. StarDist counts a match at IoU >= t; the two agree except for pairs
whose IoU equals a threshold exactly (:func:`threshold_ties`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from .labels import check_label_image

#: The DSB2018 IoU thresholds 0.50, 0.55, ..., 0.95 as k / 20.
THRESHOLD_NUMERATORS = np.arange(10, 20)
THRESHOLDS = THRESHOLD_NUMERATORS / 20.0


@dataclass(frozen=True)
class MatchingStats:
    """Counts and rates at one IoU threshold, with the field names of StarDist's ``matching``.

    Attributes
    ----------
    thresh : float
        IoU threshold; a pair matches when its IoU is above it.
    tp, fp, fn : int
        Matched true objects, unmatched predicted objects, unmatched true objects.
    precision, recall : float
        tp / (tp + fp), tp / (tp + fn).
    accuracy : float
        tp / (tp + fp + fn): the DSB2018 value at this threshold.
    f1 : float
        2 tp / (2 tp + fp + fn).
    n_true, n_pred : int
        Objects in the true and the predicted label image.
    mean_matched_score : float
        Mean IoU of the matched pairs.
    panoptic_quality : float
        Sum of the matched IoUs / (tp + fp / 2 + fn / 2) (Kirillov et al., "Panoptic
        Segmentation", CVPR 2019, eq. 1).

    Rates with a zero denominator are 1.0 when both sides are empty, else 0.0.
    """

    thresh: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    n_true: int
    n_pred: int
    mean_matched_score: float
    panoptic_quality: float

    def to_dict(self) -> dict:
        return asdict(self)


class OverlapPairs(NamedTuple):
    """Object areas and the intersections of every overlapping (true, predicted) pair."""

    true_ids: np.ndarray  # (K_true,) the labels present in y_true
    true_areas: np.ndarray  # (K_true,) their areas, pixels
    pred_ids: np.ndarray  # (K_pred,) likewise for y_pred
    pred_areas: np.ndarray
    pair_true: np.ndarray  # (P,) index into true_ids of each pair sharing a pixel
    pair_pred: np.ndarray  # (P,) index into pred_ids
    intersection: np.ndarray  # (P,) shared pixels

    def unions(self) -> np.ndarray:
        """(P,) int64 union areas of the pairs, pixels."""
        return self.true_areas[self.pair_true].astype(np.int64) + self.pred_areas[self.pair_pred] - self.intersection


def overlap_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> OverlapPairs:
    """Object areas and the intersections of every overlapping (true, predicted) pair.

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images of the same shape.

    Returns
    -------
    :class:`OverlapPairs`: the labels present in each image and their areas (pixels); for every
    pair that shares at least one pixel, indices into those labels and the intersection area.

    Raises
    ------
    ValueError
        if the inputs are not 2-D non-negative integer arrays of one shape.
    """
    y_true = check_label_image(y_true, "y_true")
    y_pred = check_label_image(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: y_true {y_true.shape} vs y_pred {y_pred.shape}")
    t, t_values = _dense_labels(np.ascontiguousarray(y_true).ravel())
    p, p_values = _dense_labels(np.ascontiguousarray(y_pred).ravel())
    nt = int(t.max(initial=0)) if t_values is not None else int(y_true.max(initial=0))
    np_ = int(p.max(initial=0)) if p_values is not None else int(y_pred.max(initial=0))
    area_t, area_p, pair_t, pair_p, inter = _pair_histogram(t, p, nt, np_)
    t_ids = np.flatnonzero(area_t)
    p_ids = np.flatnonzero(area_p)
    t_ids, p_ids = t_ids[t_ids > 0], p_ids[p_ids > 0]
    t_index = np.cumsum(area_t > 0) - (1 if area_t[0] > 0 else 0) - 1
    p_index = np.cumsum(area_p > 0) - (1 if area_p[0] > 0 else 0) - 1
    true_ids = t_ids if t_values is None else t_values[t_ids]
    pred_ids = p_ids if p_values is None else p_values[p_ids]
    return OverlapPairs(true_ids, area_t[t_ids], pred_ids, area_p[p_ids], t_index[pair_t], p_index[pair_p], inter)


def _dense_labels(flat: np.ndarray):
    """Labels usable as array indices: as they are when the largest is at most a few times the
    pixel count (no copy), else compacted to 0..K with np.unique (values returned)."""
    top = int(flat.max(initial=0))
    if top <= max(4 * flat.size, 1 << 16):
        return flat, None
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] != 0:  # keep 0 = background
        values = np.concatenate([[0], values])
        inverse = inverse + 1
    return inverse.astype(np.int64), values


@njit(cache=True)
def _pair_histogram(t, p, nt, np_):
    """Areas of labels 0..nt / 0..np_ and every overlapping (true, pred) pair's intersection.

    One counting sort of the foreground pixels by true label, then per true label a scratch
    count over the predicted labels it meets: O(pixels + labels) time and memory.
    """
    n = t.shape[0]
    area_t = np.zeros(nt + 1, np.int64)
    area_p = np.zeros(np_ + 1, np.int64)
    start = np.zeros(nt + 2, np.int64)
    for i in range(n):
        a = t[i]
        b = p[i]
        area_t[a] += 1
        area_p[b] += 1
        if a != 0 and b != 0:
            start[a + 1] += 1
    for k in range(1, nt + 2):
        start[k] += start[k - 1]
    fill = start.copy()
    bucket = np.empty(start[nt + 1], np.int64)
    for i in range(n):
        a = t[i]
        b = p[i]
        if a != 0 and b != 0:
            bucket[fill[a]] = b
            fill[a] += 1
    seen = np.full(np_ + 1, -1, np.int64)
    count = np.zeros(np_ + 1, np.int64)
    touched = np.empty(np_ + 1, np.int64)
    pair_t = np.empty(bucket.shape[0], np.int64)
    pair_p = np.empty(bucket.shape[0], np.int64)
    inter = np.empty(bucket.shape[0], np.int64)
    n_pairs = 0
    for a in range(1, nt + 1):
        m = 0
        for j in range(start[a], start[a + 1]):
            b = bucket[j]
            if seen[b] != a:
                seen[b] = a
                count[b] = 0
                touched[m] = b
                m += 1
            count[b] += 1
        for j in range(m):
            b = touched[j]
            pair_t[n_pairs] = a
            pair_p[n_pairs] = b
            inter[n_pairs] = count[b]
            n_pairs += 1
    return area_t, area_p, pair_t[:n_pairs], pair_p[:n_pairs], inter[:n_pairs]


def _stats(thresh: float, tp: int, n_true: int, n_pred: int, matched_score_sum: float) -> MatchingStats:
    fp, fn = n_pred - tp, n_true - tp
    empty = n_true == 0 and n_pred == 0

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (1.0 if empty else 0.0)

    return MatchingStats(
        thresh=float(thresh), tp=int(tp), fp=int(fp), fn=int(fn),
        precision=ratio(tp, tp + fp), recall=ratio(tp, tp + fn), accuracy=ratio(tp, tp + fp + fn),
        f1=ratio(2 * tp, 2 * tp + fp + fn), n_true=int(n_true), n_pred=int(n_pred),
        mean_matched_score=(matched_score_sum / tp) if tp else (1.0 if empty else 0.0),
        panoptic_quality=ratio(matched_score_sum, tp + fp / 2 + fn / 2),
    )


def matching_table(y_true: np.ndarray, y_pred: np.ndarray) -> list[MatchingStats]:
    """Per-threshold matching of one image, thresholds 0.50, 0.55, ..., 0.95 (match: IoU > t).

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images (any integer dtype, gaps allowed).

    Returns
    -------
    list of 10 :class:`MatchingStats`, one per threshold.

    Raises
    ------
    ValueError
        on shape mismatch or non-integer / negative / non-2-D input.
    """
    return _matching(overlap_pairs(y_true, y_pred))


def _matching(pairs: OverlapPairs) -> list[MatchingStats]:
    union = pairs.unions()
    inter = pairs.intersection
    iou = inter / np.maximum(union, 1)
    n_true, n_pred = pairs.true_areas.size, pairs.pred_areas.size
    rows = []
    for k, t in zip(THRESHOLD_NUMERATORS, THRESHOLDS):
        matched = 20 * inter > k * union
        rows.append(_stats(t, int(matched.sum()), n_true, n_pred, float(iou[matched].sum())))
    return rows


def threshold_ties(y_true: np.ndarray, y_pred: np.ndarray) -> list[int]:
    """Per threshold t = 0.50..0.95, the number of (true, predicted) pairs with IoU exactly t.

    Only such pairs are counted differently by the DSB2018 rule (IoU > t) and StarDist's
    (IoU >= t); with no tie at t the two give the same TP, FP and FN.
    """
    pairs = overlap_pairs(y_true, y_pred)
    union = pairs.unions()
    return [int((20 * pairs.intersection == k * union).sum()) for k in THRESHOLD_NUMERATORS]


def dsb_score_from_table(table: list[MatchingStats]) -> float:
    """The DSB2018 image score from a :func:`matching_table`: the mean accuracy
    TP / (TP + FP + FN) over its thresholds."""
    return float(np.mean([row.accuracy for row in table]))


def dsb_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """DSB2018 score of one image: mean over IoU thresholds 0.50..0.95 of TP / (TP + FP + FN).

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images, 0 = background.

    Returns
    -------
    float in [0, 1]; 1.0 when both are empty, 0.0 when exactly one is.

    Raises
    ------
    ValueError
        on shape mismatch or non-integer / negative / non-2-D input.
    """
    return dsb_score_from_table(matching_table(y_true, y_pred))


def dataset_table(tables: list[list[MatchingStats]]) -> list[MatchingStats]:
    """Per-threshold counts summed over images (StarDist's ``matching_dataset``, by_image=False).

    ``tables`` holds one :func:`matching_table` result per image. Rates are recomputed from the
    summed tp, fp, fn and matched IoUs (each image's ``mean_matched_score * tp``, as StarDist does).
    """
    out = []
    for i, t in enumerate(THRESHOLDS):
        rows = [tab[i] for tab in tables]
        tp = sum(r.tp for r in rows)
        matched = sum(r.mean_matched_score * r.tp for r in rows)
        out.append(_stats(t, tp, sum(r.n_true for r in rows), sum(r.n_pred for r in rows), matched))
    return out


def aggregated_jaccard_index(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (AJI) of one image.

    Source: Kumar et al., "A Dataset and a Technique for Generalized Nuclear Segmentation for
    Computational Pathology", IEEE TMI 36(7), 2017, section IV-A (the MoNuSeg metric). Each true
    nucleus G is paired with the predicted nucleus S of highest IoU among those it overlaps (ties:
    the lower predicted label); |G & S| adds to C and |G | S| to U. A true nucleus that overlaps no
    prediction adds |G| to U, and every predicted nucleus paired with no true one adds its area to
    U. AJI = C / U. A predicted nucleus may be paired with several true ones (it is then counted
    in each union), as in the original definition.

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images, 0 = background (gaps allowed).

    Returns
    -------
    C / U, a float in [0, 1]: 1.0 when neither image holds a nucleus, 0.0 when only one does or
    no nucleus overlaps another.

    Raises
    ------
    ValueError
        if the label images differ in shape, or are not 2-D arrays of non-negative integers.
    """
    return _aji(overlap_pairs(y_true, y_pred))


def _aji(pairs: OverlapPairs) -> float:
    if pairs.true_areas.size == 0 and pairs.pred_areas.size == 0:
        return 1.0
    union = pairs.unions()
    iou = pairs.intersection / np.maximum(union, 1)
    order = np.lexsort((pairs.pair_pred, -iou, pairs.pair_true))  # per true nucleus: best IoU first
    first = np.ones(order.size, bool)
    first[1:] = pairs.pair_true[order][1:] != pairs.pair_true[order][:-1]
    best = order[first]  # one pair per true nucleus that overlaps a prediction
    paired_true = np.zeros(pairs.true_areas.size, bool)
    paired_true[pairs.pair_true[best]] = True
    paired_pred = np.zeros(pairs.pred_areas.size, bool)
    paired_pred[pairs.pair_pred[best]] = True
    c = int(pairs.intersection[best].sum())
    u = int(union[best].sum()) + int(pairs.true_areas[~paired_true].sum()) + int(pairs.pred_areas[~paired_pred].sum())
    return c / u


class ImageMetrics(NamedTuple):
    """Every score of one image, from one pass over its pixels (:func:`image_metrics`).

    ``dsb_score``: mean accuracy over IoU 0.50..0.95 (the DSB2018 score); ``ap50``: accuracy
    TP / (TP + FP + FN) at IoU > 0.5 (the DSB2018 sense of average precision at 0.5); ``aji``:
    :func:`aggregated_jaccard_index`; ``pq``: panoptic quality at IoU > 0.5; ``table``: the
    :func:`matching_table`.
    """

    dsb_score: float
    ap50: float
    aji: float
    pq: float
    n_true: int
    n_pred: int
    table: list[MatchingStats]


def image_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> ImageMetrics:
    """DSB score, AP at IoU 0.5, AJI, PQ and the matching table of one image, all from one sparse
    pair histogram (linear in pixels).

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images, 0 = background (gaps allowed).

    Returns
    -------
    :class:`ImageMetrics`.

    Raises
    ------
    ValueError
        on shape mismatch or non-integer / negative / non-2-D input.
    """
    pairs = overlap_pairs(y_true, y_pred)
    table = _matching(pairs)
    return ImageMetrics(dsb_score_from_table(table), table[0].accuracy, _aji(pairs), table[0].panoptic_quality,
                        table[0].n_true, table[0].n_pred, table)

