"""``nucleiseg bench score``: our DSB score against StarDist's ``matching`` (all 10 thresholds)
and the Kaggle-kernel formulation, on real label images and on large mosaics of them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..metrics import dsb_score_from_table, matching_table, threshold_ties
from .common import LabeledImages, best_of, machine
from .references import kaggle_kernel_score

#: Mosaic tiles: label images of exactly this many pixels square.
MOSAIC_TILE = 1024


def _mosaic(labels_list: list[np.ndarray], tile: int, grid: int) -> np.ndarray:
    """A grid x grid mosaic of label images cropped/padded to tile x tile, labels kept distinct."""
    out = np.zeros((grid * tile, grid * tile), np.int32)
    offset = 0
    for k in range(grid * grid):
        lab = labels_list[k % len(labels_list)][:tile, :tile].astype(np.int32)
        r, c = divmod(k, grid)
        out[r * tile : r * tile + lab.shape[0], c * tile : c * tile + lab.shape[1]] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max(initial=0))
    return out


def imperfect_prediction(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in prediction: the truth shifted by (1, 2) px, every 10th object
    dropped, and labels shuffled, so IoUs spread over the thresholds."""
    rng = np.random.default_rng(seed)
    shifted = ndimage.shift(labels, (1, 2), order=0, mode="constant")
    top = int(labels.max(initial=0))
    perm = np.concatenate([[0], rng.permutation(top) + 1]).astype(np.int64)
    perm[1::10] = 0
    return perm[shifted].astype(np.int32)


def score_cases(data: LabeledImages, predict=None, huge: bool = True) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, truth, prediction) cases: the image with the most nuclei, against ``predict(image)``
    (e.g. a model's labels) when given and the source has its image, else against
    :func:`imperfect_prediction`; a 4 x 4 mosaic of the label images of exactly
    ``MOSAIC_TILE`` px square (of every image, cropped or padded, when there is none); and with
    ``huge`` a 16 x 16 mosaic of the same tiles."""
    source = data.labels
    labels = {i: source.get(i) for i in source.ids()}
    if not labels:
        raise ValueError("no label image to benchmark")
    most = max(labels, key=lambda i: len(np.unique(labels[i])))
    big = labels[most].astype(np.int32)
    path = data.image_path(most)
    if predict is not None and path is not None:
        from ..data.images import read_image

        prediction = predict(read_image(path))
    else:
        prediction = imperfect_prediction(big)
    cases = [(f"{big.shape[0]}x{big.shape[1]}", big, prediction)]
    tiles = [lab for lab in labels.values() if lab.shape == (MOSAIC_TILE, MOSAIC_TILE)] or list(labels.values())
    for grid in (4, 16) if huge else (4,):
        m = _mosaic(tiles, MOSAIC_TILE, grid)
        cases.append((f"{m.shape[0]}x{m.shape[1]} mosaic", m, imperfect_prediction(m)))
    return cases


def bench_score(cases: list[tuple[str, np.ndarray, np.ndarray]], stardist: bool = True) -> dict:
    """Time our matching table, StarDist's ``matching`` and the Kaggle kernel on each case
    (StarDist and the kernel only up to 4096 x 4096 pixels: their dense overlap matrices are
    K_true x K_pred beyond)."""
    try:
        from stardist.matching import matching as sd_matching
    except ImportError:
        sd_matching = None
    thresholds = [k / 20 for k in range(10, 20)]
    first = cases[0][1][:64, :64]
    matching_table(first, first)  # compile / load the numba kernel once
    out = {"machine": machine(), "cases": []}
    for name, y_true, y_pred in cases:
        small = y_true.size <= 4096 * 4096
        ours_s, table = best_of(lambda: matching_table(y_true, y_pred), 3 if small else 1)
        case = {"case": name, "objects_true": int(len(np.unique(y_true)) - 1),
                "objects_pred": int(len(np.unique(y_pred)) - 1), "ours_s": ours_s,
                "ours": [(r.tp, r.fp, r.fn) for r in table], "ours_score": dsb_score_from_table(table),
                "stardist_s": None, "stardist": None, "kaggle_s": None, "kaggle_score": None}
        if stardist and sd_matching is not None and small:
            sd_s, sd = best_of(lambda: sd_matching(y_true, y_pred, thresh=thresholds), 3)
            case.update(stardist_s=sd_s, stardist=[(s.tp, s.fp, s.fn) for s in sd],
                        stardist_score=float(np.mean([s.accuracy for s in sd])),
                        ties=threshold_ties(y_true, y_pred))
        if small:
            kg_s, kg = best_of(lambda: kaggle_kernel_score(y_true, y_pred), 1)
            case.update(kaggle_s=kg_s, kaggle_score=kg)
        out["cases"].append(case)
    out["stardist_available"] = sd_matching is not None
    return out


def counts_agree(ours: list[tuple[int, int, int]], stardist: list[tuple[int, int, int]], ties: list[int]) -> str:
    """'yes' when TP/FP/FN equal StarDist's at every threshold without an IoU == t tie, and
    differ by at most the tie count where there are ties; else 'NO'."""
    for (tp, fp, fn), (stp, sfp, sfn), n_ties in zip(ours, stardist, ties):
        if n_ties == 0 and (tp, fp, fn) != (stp, sfp, sfn):
            return "NO"
        if abs(tp - stp) > n_ties:
            return "NO"
    n = sum(1 for t in ties if t)
    return "yes" + (f" ({sum(ties)} IoU == t ties at {n} thresholds)" if n else "")


def format_score(result: dict) -> str:
    lines = [f"machine: {result['machine']}",
             f"{'case':<20}{'objects':>13}{'ours ms':>10}{'StarDist ms':>12}{'Kaggle ms':>11}{'ours/SD':>9}"
             f"{'DSB ours':>10}{'DSB SD':>8}{'DSB Kaggle':>11}  TP/FP/FN = StarDist's"]
    for c in result["cases"]:
        sd, kg = c["stardist_s"], c["kaggle_s"]
        agree = "-" if c["stardist"] is None else counts_agree(c["ours"], c["stardist"], c["ties"])
        lines.append(
            f"{c['case']:<20}{c['objects_true']:>6}/{c['objects_pred']:<6}{c['ours_s'] * 1e3:>10.1f}"
            + (f"{sd * 1e3:>12.1f}" if sd is not None else f"{'-':>12}")
            + (f"{kg * 1e3:>11.1f}" if kg is not None else f"{'-':>11}")
            + (f"{c['ours_s'] / sd:>9.3f}" if sd is not None else f"{'-':>9}")
            + f"{c['ours_score']:>10.4f}"
            + (f"{c['stardist_score']:>8.4f}" if sd is not None else f"{'-':>8}")
            + (f"{c['kaggle_score']:>11.4f}" if kg is not None else f"{'-':>11}")
            + f"  {agree}")
    if not result["stardist_available"]:
        lines.append("StarDist not installed: pip install --no-deps stardist csbdeep six")
    return "\n".join(lines)
