"""Reference implementations, used only to check our results and to time against
(``nucleiseg bench`` and the tests); never called by the pipeline.

- :func:`unet_weight_map_reference`: the common implementation of the U-Net weight map
  (one full SciPy EDT per nucleus, then a sort over the (H, W, K) stack): O(K H W) time and memory.
- :func:`kaggle_kernel_score`: the widely copied Kaggle-kernel formulation of the DSB2018 score
  (dense ``np.histogram2d`` over consecutive label bins): K_true x K_pred memory, and wrong for
  labels with gaps; fed relabeled images here so its answers are comparable.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def two_nearest_reference(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2 by one EDT of (labels != k) per nucleus k, sorted over k. Inf with < 1 / < 2 nuclei."""
    ids = [k for k in np.unique(labels) if k != 0]
    if not ids:
        inf = np.full(labels.shape, np.inf)
        return inf, inf
    stack = np.stack([ndimage.distance_transform_edt(labels != k) for k in ids], axis=-1)
    stack.sort(axis=-1)
    d1 = stack[..., 0]
    d2 = stack[..., 1] if len(ids) > 1 else np.full(labels.shape, np.inf)
    return d1, d2


def unet_weight_map_reference(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                              class_weights: tuple[float, float] | None = None) -> np.ndarray:
    """U-Net eq. 2 the common way; border term on background, 0 with fewer than two nuclei."""
    labels = np.asarray(labels)
    fg = labels > 0
    if class_weights is None:
        f = fg.mean()
        w_bg, w_fg = (1.0, 1.0) if f in (0.0, 1.0) else (0.5 / (1 - f), 0.5 / f)
    else:
        w_bg, w_fg = class_weights
    w = np.where(fg, w_fg, w_bg).astype(np.float64)
    if len(np.unique(labels[fg])) >= 2:
        d1, d2 = two_nearest_reference(labels)
        w += np.where(~fg, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)), 0.0)
    return w.astype(np.float32)


def kaggle_kernel_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The Kaggle-kernel DSB2018 score (histogram2d IoU matrix, IoU > t), on relabeled inputs."""
    from skimage.segmentation import relabel_sequential

    y_true = relabel_sequential(y_true)[0]
    y_pred = relabel_sequential(y_pred)[0]
    true_objects, pred_objects = y_true.max() + 1, y_pred.max() + 1
    intersection = np.histogram2d(y_true.ravel(), y_pred.ravel(), bins=(true_objects, pred_objects))[0]
    area_true = np.histogram(y_true, bins=true_objects)[0][:, None]
    area_pred = np.histogram(y_pred, bins=pred_objects)[0][None, :]
    union = area_true + area_pred - intersection
    iou = (intersection / np.maximum(union, 1))[1:, 1:]
    if iou.size == 0:
        return 1.0 if (true_objects == 1 and pred_objects == 1) else 0.0
    prec = []
    for t in np.arange(0.5, 1.0, 0.05):
        matches = iou > t
        tp = np.sum(np.sum(matches, axis=1) == 1)
        fp = np.sum(np.sum(matches, axis=0) == 0)
        fn = np.sum(np.sum(matches, axis=1) == 0)
        prec.append(tp / (tp + fp + fn))
    return float(np.mean(prec))
