"""The DSB2018 score and a StarDist-style matching table.

Source: Kaggle DSB2018 evaluation ("mean average precision at different IoU thresholds"),
GUIDE section 2. For one image, IoU(A, B) = |A & B| / |A | B| for every true object A and
predicted object B. At threshold t a true object is a true positive (TP) when a predicted object
has IoU > t with it (strictly greater); unmatched predicted objects are false positives (FP),
unmatched true objects false negatives (FN). Because t >= 0.5 each object matches at most one
other. The image score is the mean over t = 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN); the
dataset score is the mean of image scores.

Empty cases: no true and no predicted object gives 1.0 at every threshold; one side empty
gives 0.0.

All IoUs come from the histogram of (true label, predicted label) pairs over the pixels where
both are non-zero, built in one numba pass (a counting sort by true label, then a scratch count
per true object): time and memory O(pixels + labels + overlapping pairs), never K_true x K_pred.
Labels may have gaps; label values far above the pixel count are first compacted with np.unique. Threshold tests are exact integer arithmetic (20 * |A & B| > k * |A | B| for
t = k / 20), so an IoU of exactly 0.5 is not a match at t = 0.5.

StarDist's ``matching`` counts a match at IoU >= t; the two agree except for pairs whose IoU
equals a threshold exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from .labels import check_label_image

#: The DSB2018 IoU thresholds 0.50, 0.55, ..., 0.95 as k / 20.
THRESHOLD_NUMERATORS = np.arange(10, 20)
THRESHOLDS = THRESHOLD_NUMERATORS / 20.0


@dataclass
class MatchingStats:
    """Counts and derived rates at one IoU threshold (StarDist's ``matching`` fields).

    ``dsb_precision`` = tp / (tp + fp + fn) is the DSB2018 per-threshold value (StarDist calls it
    accuracy); ``precision`` = tp / (tp + fp), ``recall`` = tp / (tp + fn), ``f1``,
    ``mean_matched_iou`` (mean IoU of the tp pairs), ``panoptic_quality`` = sum of matched IoU /
    (tp + fp / 2 + fn / 2). Rates with a zero denominator are 1.0 when both sides are empty,
    else 0.0.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    dsb_precision: float
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    panoptic_quality: float
    matched_iou_sum: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def overlap_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Object areas and the intersections of every overlapping (true, predicted) pair.

    Parameters
    ----------
    y_true, y_pred : (H, W) non-negative integer label images of the same shape.

    Returns
    -------
    true_ids, true_areas : (K_true,) the labels present in ``y_true`` and their areas (pixels).
    pred_ids, pred_areas : likewise for ``y_pred``.
    pair_true, pair_pred, pair_inter : (P,) index into true_ids / pred_ids and intersection area
        of every pair that shares at least one pixel.

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
    return (true_ids, area_t[t_ids], pred_ids, area_p[p_ids], t_index[pair_t], p_index[pair_p], inter)


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


def _stats(threshold: float, tp: int, n_true: int, n_pred: int, iou_sum: float) -> MatchingStats:
    fp, fn = n_pred - tp, n_true - tp
    empty = n_true == 0 and n_pred == 0

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (1.0 if empty else 0.0)

    return MatchingStats(
        threshold=float(threshold),
        tp=int(tp),
        fp=int(fp),
        fn=int(fn),
        dsb_precision=ratio(tp, tp + fp + fn),
        precision=ratio(tp, tp + fp),
        recall=ratio(tp, tp + fn),
        f1=ratio(2 * tp, 2 * tp + fp + fn),
        mean_matched_iou=(iou_sum / tp) if tp else (1.0 if empty else 0.0),
        panoptic_quality=ratio(iou_sum, tp + fp / 2 + fn / 2),
        matched_iou_sum=float(iou_sum),
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
    _, true_areas, _, pred_areas, pt, pp, inter = overlap_pairs(y_true, y_pred)
    union = true_areas[pt].astype(np.int64) + pred_areas[pp] - inter
    iou = inter / np.maximum(union, 1)
    rows = []
    for k, t in zip(THRESHOLD_NUMERATORS, THRESHOLDS):
        matched = 20 * inter > k * union
        rows.append(_stats(t, int(matched.sum()), true_areas.size, pred_areas.size, float(iou[matched].sum())))
    return rows


def threshold_ties(y_true: np.ndarray, y_pred: np.ndarray) -> list[int]:
    """Per threshold t = 0.50..0.95, the number of (true, predicted) pairs with IoU exactly t.

    Only such pairs are counted differently by the DSB2018 rule (IoU > t) and StarDist's
    (IoU >= t); with no tie at t the two give the same TP, FP and FN.
    """
    _, true_areas, _, pred_areas, pt, pp, inter = overlap_pairs(y_true, y_pred)
    union = true_areas[pt].astype(np.int64) + pred_areas[pp] - inter
    return [int((20 * inter == k * union).sum()) for k in THRESHOLD_NUMERATORS]


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
    return float(np.mean([row.dsb_precision for row in matching_table(y_true, y_pred)]))


def dataset_table(tables: list[list[MatchingStats]]) -> list[MatchingStats]:
    """Per-threshold counts summed over images (StarDist's ``matching_dataset``, by_image=False).

    ``tables`` holds one :func:`matching_table` result per image. Rates are recomputed from the
    summed tp, fp, fn and matched-IoU sums.
    """
    out = []
    for i, t in enumerate(THRESHOLDS):
        tp = sum(tab[i].tp for tab in tables)
        fp = sum(tab[i].fp for tab in tables)
        fn = sum(tab[i].fn for tab in tables)
        iou_sum = sum(tab[i].matched_iou_sum for tab in tables)
        out.append(_stats(t, tp, tp + fn, tp + fp, iou_sum))
    return out


def image_score(table: list[MatchingStats]) -> float:
    """The DSB2018 image score from a :func:`matching_table` result."""
    return float(np.mean([row.dsb_precision for row in table]))
