"""The DSB2018 score on hand-made label images with known answers, and against a naive reference."""

from __future__ import annotations

import numpy as np
import pytest

from nucleiseg.metrics import THRESHOLDS, dataset_table, dsb_score, matching_table, threshold_ties


def naive_dsb_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Independent reference: per-object boolean masks, IoU by set counting, greedy matching."""
    t_ids = [k for k in np.unique(y_true) if k != 0]
    p_ids = [k for k in np.unique(y_pred) if k != 0]
    if not t_ids and not p_ids:
        return 1.0
    iou = np.zeros((len(t_ids), len(p_ids)))
    for i, a in enumerate(t_ids):
        for j, b in enumerate(p_ids):
            A, B = y_true == a, y_pred == b
            iou[i, j] = (A & B).sum() / (A | B).sum()
    scores = []
    for t in THRESHOLDS:
        tp = int((iou > t).any(axis=1).sum()) if p_ids else 0
        fp, fn = len(p_ids) - tp, len(t_ids) - tp
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def square(shape, r0, c0, size):
    out = np.zeros(shape, bool)
    out[r0 : r0 + size, c0 : c0 + size] = True
    return out


def test_identical_and_gapped_labels():
    y = np.zeros((20, 20), np.uint16)
    y[square(y.shape, 1, 1, 5)] = 3
    y[square(y.shape, 10, 10, 6)] = 17
    assert dsb_score(y, y) == 1.0
    relabeled = np.where(y == 3, 1000, np.where(y == 17, 2, 0)).astype(np.uint32)
    assert dsb_score(y, relabeled) == 1.0


def test_empty_cases():
    empty = np.zeros((8, 8), np.uint8)
    one = empty.copy()
    one[2:5, 2:5] = 1
    assert dsb_score(empty, empty) == 1.0
    assert dsb_score(one, empty) == 0.0
    assert dsb_score(empty, one) == 0.0
    rows = matching_table(empty, empty)
    assert all(r.tp == r.fp == r.fn == 0 and r.accuracy == 1.0 for r in rows)


def test_merge_known_answer():
    # two true 10x10 squares side by side; the prediction merges them into one 10x20 object:
    # IoU = 100 / 200 = 0.5 exactly, which is NOT > 0.5: no match at any threshold.
    y_true = np.zeros((12, 24), np.uint8)
    y_true[1:11, 1:11] = 1
    y_true[1:11, 11:21] = 2
    y_pred = (y_true > 0).astype(np.uint8)
    rows = matching_table(y_true, y_pred)
    assert [(r.tp, r.fp, r.fn) for r in rows] == [(0, 1, 2)] * 10
    assert dsb_score(y_true, y_pred) == 0.0


def test_split_known_answer():
    # one true 10x10 square; prediction splits it 6 / 4 columns: IoU 0.6 and 0.4.
    y_true = np.zeros((12, 12), np.uint8)
    y_true[1:11, 1:11] = 1
    y_pred = np.zeros_like(y_true)
    y_pred[1:11, 1:7] = 1
    y_pred[1:11, 7:11] = 2
    rows = matching_table(y_true, y_pred)
    # t = 0.50, 0.55: one TP (IoU 0.6), one FP -> 1/2; t >= 0.60: 0.6 is not > 0.6 -> 0 / 3
    expected = [0.5, 0.5] + [0.0] * 8
    assert [r.accuracy for r in rows] == pytest.approx(expected)
    assert dsb_score(y_true, y_pred) == pytest.approx(0.1)
    assert rows[0].mean_matched_score == pytest.approx(0.6)
    assert rows[0].precision == 0.5 and rows[0].recall == 1.0


def test_partial_overlap_known_answer():
    # true 10x10, prediction the same square shifted by 1 column: IoU = 90 / 110 = 0.818...
    y_true = np.zeros((12, 13), np.uint8)
    y_true[1:11, 1:11] = 1
    y_pred = np.zeros_like(y_true)
    y_pred[1:11, 2:12] = 5
    # matched for t in 0.50..0.80 (7 thresholds), not for 0.85, 0.90, 0.95
    assert dsb_score(y_true, y_pred) == pytest.approx(7 / 10)


@pytest.mark.parametrize("seed", range(5))
def test_against_naive_reference(seed):
    rng = np.random.default_rng(seed)
    y_true = np.zeros((40, 40), np.int32)
    y_pred = np.zeros((40, 40), np.int32)
    for k in range(8):
        r, c, s = rng.integers(0, 32, 2).tolist() + [int(rng.integers(3, 9))]
        y_true[r : r + s, c : c + s] = rng.integers(1, 500)
        y_pred[r + rng.integers(-2, 3) : r + s, c : c + s + rng.integers(-2, 3)] = rng.integers(1, 500)
    y_true[y_true < 0] = 0
    assert dsb_score(y_true, y_pred) == pytest.approx(naive_dsb_score(y_true, y_pred))


def test_score_on_real_labels_against_reference(sample_labels):
    from scipy import ndimage

    labels = next(iter(sample_labels.values())).astype(np.int32)
    shifted = ndimage.shift(labels, (1, 2), order=0)  # a realistic imperfect prediction
    assert dsb_score(labels, shifted) == pytest.approx(naive_dsb_score(labels, shifted))


def test_dataset_table_sums_counts():
    a = np.zeros((10, 10), np.uint8)
    a[1:4, 1:4] = 1
    b = np.zeros((10, 10), np.uint8)
    tables = [matching_table(a, a), matching_table(a, b)]
    total = dataset_table(tables)
    assert (total[0].tp, total[0].fp, total[0].fn) == (1, 0, 1)
    assert total[0].recall == 0.5 and total[0].precision == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        dsb_score(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        dsb_score(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="negative"):
        dsb_score(-np.ones((3, 3), np.int32), np.zeros((3, 3), np.uint8))


@pytest.mark.parametrize("seed", range(3))
def test_huge_label_values_and_no_background(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, (30, 30)).astype(np.int64)
    y_pred = np.roll(y_true, 1, axis=1)
    expected = naive_dsb_score(y_true, y_pred)
    huge = np.where(y_true > 0, y_true * 10**12 + 7, 0)  # exercises the np.unique compaction path
    assert dsb_score(huge, y_pred) == pytest.approx(expected)
    assert dsb_score(y_true.astype(np.uint8), (y_pred + 1).astype(np.uint32)) == pytest.approx(
        naive_dsb_score(y_true, y_pred + 1))  # prediction with no background pixel


def test_threshold_ties():
    # IoU exactly 0.5 for both pairs of the merge case; 0.6 and 0.4 for the split case
    y_true = np.zeros((12, 24), np.uint8)
    y_true[1:11, 1:11] = 1
    y_true[1:11, 11:21] = 2
    assert threshold_ties(y_true, (y_true > 0).astype(np.uint8)) == [2] + [0] * 9
    y_pred = np.zeros_like(y_true)
    y_pred[1:11, 1:7] = 1
    y_pred[1:11, 7:11] = 2
    assert threshold_ties(y_true, y_pred)[2] == 1  # t = 0.60


def test_counts_agree_rule():
    from nucleiseg.bench.score import counts_agree

    same = [(3, 1, 0)] * 10
    assert counts_agree(same, same, [0] * 10) == "yes"
    off = [(4, 0, -1)] + [(3, 1, 0)] * 9
    assert counts_agree(same, off, [0] * 10) == "NO"
    assert counts_agree(same, off, [1] + [0] * 9).startswith("yes (1 IoU == t ties")


def test_benchmark_json_takes_numpy_numbers():
    import json

    from nucleiseg.bench.common import to_json

    result = {"ours": [(np.int64(3), np.int32(1), 0)], "t": np.float32(0.5), "a": np.arange(2)}
    assert json.loads(to_json(result)) == {"ours": [[3, 1, 0]], "t": 0.5, "a": [0, 1]}


# ---------------------------------------------------------------- AJI and PQ


def boxes(shape: tuple[int, int], rectangles: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """A uint16 label image with label k on rows r0:r1, columns c0:c1 for each k: (r0, r1, c0, c1)."""
    labels = np.zeros(shape, np.uint16)
    for k, (r0, r1, c0, c1) in rectangles.items():
        labels[r0:r1, c0:c1] = k
    return labels


def naive_aji(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """AJI straight from its definition (Kumar et al. 2017), one mask comparison at a time."""
    true_ids = [k for k in np.unique(y_true) if k]
    pred_ids = [k for k in np.unique(y_pred) if k]
    if not true_ids and not pred_ids:
        return 1.0
    c = u = 0
    used = set()
    for g in true_ids:
        gm = y_true == g
        best, best_iou = None, 0.0
        for s in pred_ids:  # ascending: ties keep the lower label
            sm = y_pred == s
            inter = np.logical_and(gm, sm).sum()
            if inter and inter / np.logical_or(gm, sm).sum() > best_iou:
                best, best_iou = s, inter / np.logical_or(gm, sm).sum()
        if best is None:
            u += gm.sum()
        else:
            sm = y_pred == best
            c += np.logical_and(gm, sm).sum()
            u += np.logical_or(gm, sm).sum()
            used.add(best)
    u += sum((y_pred == s).sum() for s in pred_ids if s not in used)
    return c / u


def naive_pq(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Panoptic quality (Kirillov et al. 2019, eq. 1) with matches at IoU > 0.5, by brute force."""
    true_ids = [k for k in np.unique(y_true) if k]
    pred_ids = [k for k in np.unique(y_pred) if k]
    ious = []
    for g in true_ids:
        for s in pred_ids:
            gm, sm = y_true == g, y_pred == s
            iou = np.logical_and(gm, sm).sum() / np.logical_or(gm, sm).sum()
            if iou > 0.5:
                ious.append(iou)
    tp = len(ious)
    denominator = tp + (len(pred_ids) - tp) / 2 + (len(true_ids) - tp) / 2
    return sum(ious) / denominator if denominator else 1.0


def test_aji_and_pq_by_hand():
    from nucleiseg.metrics import aggregated_jaccard_index, image_metrics

    empty = np.zeros((6, 6), np.uint16)
    one = empty.copy()
    one[1:3, 1:3] = 9
    assert aggregated_jaccard_index(empty, empty) == 1.0 and image_metrics(empty, empty).pq == 1.0
    assert aggregated_jaccard_index(one, empty) == 0.0 and aggregated_jaccard_index(empty, one) == 0.0
    assert image_metrics(one, empty).pq == 0.0
    # a split: one 20 px nucleus predicted as two 10 px halves (IoU 0.5 each, not > 0.5)
    t = np.zeros((4, 10), np.uint16)
    t[:2, :] = 5
    p = np.zeros_like(t)
    p[:2, :5], p[:2, 5:] = 3, 8  # gapped labels on both sides
    m = image_metrics(t, p)
    assert m.aji == pytest.approx(10 / 30)  # paired with label 3 (tie: the lower label); label 8 adds 10
    assert m.pq == 0.0 and m.ap50 == 0.0 and (m.n_true, m.n_pred) == (1, 2)
    # a merge: two 10 px nuclei predicted as one 20 px nucleus (both pair with it)
    m = image_metrics(p, t)
    assert m.aji == pytest.approx(20 / 40) and m.pq == 0.0
    # a near miss: IoU 16/20 = 0.8 and an unmatched prediction
    m = image_metrics(boxes((10, 10), {1: (0, 4, 0, 4)}), boxes((10, 10), {2: (0, 4, 0, 5), 4: (7, 9, 7, 9)}))
    assert m.aji == pytest.approx(16 / (20 + 4))
    assert m.pq == pytest.approx(0.8 / (1 + 0.5)) and m.ap50 == pytest.approx(1 / 2)


def test_aji_and_pq_equal_naive_references_on_random_label_images():
    from nucleiseg.metrics import image_metrics

    rng = np.random.default_rng(11)
    for _ in range(40):
        shape = tuple(rng.integers(5, 30, 2))
        t = rng.integers(0, 6, shape) * (rng.random(shape) < 0.7)
        p = np.where(rng.random(shape) < 0.8, t, rng.integers(0, 6, shape)) * 3  # gapped labels
        m = image_metrics(t.astype(np.uint16), p.astype(np.int32))
        assert m.aji == pytest.approx(naive_aji(t, p), abs=1e-12)
        assert m.pq == pytest.approx(naive_pq(t, p), abs=1e-12)
        assert m.dsb_score == pytest.approx(dsb_score(t, p), abs=1e-12)
