"""Figures written to PNG files: segmentation comparisons, the score against the IoU threshold,
and training curves. Every figure is written atomically.

Figures are drawn on a ``matplotlib.figure.Figure`` with its own Agg canvas, never through
``pyplot``: importing or using this module does not touch the user's matplotlib backend or
open windows (the approach of matplotlib's "Embedding in a web application server" example).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from .io import atomic_write
from .metrics import dsb_score, overlap_pairs
from .overlay import colour_overlay, image_to_rgb8

TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 200, 0), (255, 200, 0), (230, 0, 60)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def match_overlay(image: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """RGB picture of matching at IoU > ``threshold``: matched predictions (true positives) green,
    unmatched predictions (false positives) yellow, unmatched true nuclei (false negatives) red
    outlines. Returns (H, W, 3) uint8."""
    pairs = overlap_pairs(y_true, y_pred)
    ok = pairs.intersection > threshold * pairs.unions()
    t_ids = pairs.true_ids
    matched_true = set(t_ids[pairs.pair_true[ok]].tolist())
    matched_pred = set(pairs.pred_ids[pairs.pair_pred[ok]].tolist())
    rgb = image_to_rgb8(image).astype(np.float32)
    tp = np.isin(y_pred, list(matched_pred)) & (y_pred > 0)
    fp = (y_pred > 0) & ~tp
    fn = np.isin(y_true, [k for k in t_ids.tolist() if k not in matched_true]) & (y_true > 0)
    for mask, colour in ((tp, TP_COLOUR), (fp, FP_COLOUR)):
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array(colour, np.float32)
    rgb[find_boundaries(np.where(fn, y_true, 0), mode="inner")] = FN_COLOUR
    return rgb.astype(np.uint8)


def show_figure(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, truth: np.ndarray | None = None,
                title: str = "") -> None:
    """Side by side: the image, the predicted labels (colour overlay) and, with ``truth``, the
    true positives / false positives / false negatives at IoU 0.5 with the DSB score."""
    panels = [(image_to_rgb8(image), "image"), (colour_overlay(image, labels), f"{int(labels.max())} nuclei predicted")]
    if truth is not None:
        score = dsb_score(truth, labels)
        panels.append((match_overlay(image, truth, labels),
                       f"IoU 0.5: TP green, FP yellow, FN red\nDSB score {score:.3f} ({len(np.unique(truth)) - 1} true)"))
    h, w = labels.shape
    fig = _figure(4.2 * len(panels) * max(w / h, 0.5), 4.6)
    axes = fig.subplots(1, len(panels))
    for ax, (picture, name) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)


def score_plot(path: str | os.PathLike, per_threshold: list[dict], title: str = "") -> None:
    """Precision, recall, F1 (summed counts) and the mean per-image accuracy TP / (TP + FP + FN)
    against the IoU threshold, from a :class:`~nucleiseg.evaluation.ScoreReport`'s
    ``per_threshold`` rows."""
    t = [r["thresh"] for r in per_threshold]
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    for key, label, style in (("precision", "precision TP/(TP+FP)", "-o"), ("recall", "recall TP/(TP+FN)", "-s"),
                              ("f1", "F1", "-^"), ("mean_image_accuracy", "DSB TP/(TP+FP+FN), mean over images", "-d")):
        ax.plot(t, [r[key] for r in per_threshold], style, label=label, markersize=4)
    ax.set_xlabel("IoU threshold")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def training_curve(path: str | os.PathLike, history: list[dict]) -> None:
    """Loss and validation DSB score (overall and per modality) against the optimizer step."""
    steps = [h["step"] for h in history]
    fig = _figure(9, 3.4)
    a1, a2 = fig.subplots(1, 2)
    a1.plot(steps, [h["loss"] for h in history], "-o", markersize=3)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (smoothed)")
    a2.plot(steps, [h["val_score"] for h in history], "-o", markersize=3, label="overall", color="k")
    for modality in sorted({m for h in history for m in h.get("val_per_modality", {})}):
        a2.plot(steps, [h["val_per_modality"].get(modality, np.nan) for h in history], "--", label=modality)
    a2.set_xlabel("step")
    a2.set_ylabel("validation DSB score")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    _save(fig, path)
