"""Training-time sampling and augmentation of (normalised image, class map) crops.

Geometric: random crop (with random scale 0.7..1.4 half of the time), then one of the 8 dihedral
transforms (flips and 90-degree rotations). Intensity: gamma, contrast, brightness and Gaussian
noise on the normalised [0, 1] image.
"""

from __future__ import annotations

import cv2
import numpy as np


def random_crop(
    arrays: list[np.ndarray], size: int, rng: np.random.Generator, scale_range: tuple[float, float] = (0.7, 1.4)
) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` crop of several (H, W) arrays (image, classes, weights).

    Half the time the crop covers ``size / s`` pixels of the source, ``s`` drawn from
    ``scale_range``, resized to ``size``: linear for float arrays, nearest for integer ones.
    Arrays smaller than the window are mirror-padded.
    """
    scale = rng.uniform(*scale_range) if rng.random() < 0.5 else 1.0
    win = max(8, int(round(size / scale)))
    h, w = arrays[0].shape
    if h < win or w < win:
        ph, pw = max(0, win - h), max(0, win - w)
        mode = "reflect" if (ph < h and pw < w) else "edge"
        arrays = [np.pad(a, ((0, ph), (0, pw)), mode=mode) for a in arrays]
        h, w = arrays[0].shape
    r = int(rng.integers(0, h - win + 1))
    c = int(rng.integers(0, w - win + 1))
    out = [a[r : r + win, c : c + win] for a in arrays]
    if win != size:
        out = [cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR if a.dtype.kind == "f" else cv2.INTER_NEAREST)
               for a in out]
    return out


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 dihedral transforms (k in 0..7) of the last two axes."""
    out = np.rot90(array, k % 4, axes=(-2, -1))
    return out[..., ::-1] if k >= 4 else out


def dihedral_inverse(array: np.ndarray, k: int) -> np.ndarray:
    """Undo :func:`dihedral` with the same k."""
    if k >= 4:
        array = array[..., ::-1]
    return np.rot90(array, -(k % 4), axes=(-2, -1))


def intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma (0.7..1.5), contrast (0.75..1.25), brightness (-0.1..0.1) and noise (sigma <= 0.03)."""
    x = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.5)
    x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), size=x.shape)
    return x.astype(np.float32)


def sample_batch(
    images: list[np.ndarray], classes: list[np.ndarray], probabilities: np.ndarray, batch_size: int, crop_size: int,
    rng: np.random.Generator, pixel_weights: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Draw a batch: images chosen with ``probabilities``, each cropped and augmented.

    Returns (batch_size, 1, crop, crop) float32 inputs, (batch_size, crop, crop) int64 classes,
    (batch_size, crop, crop) float32 pixel weights (None without ``pixel_weights``), and the
    chosen indices.
    """
    idx = rng.choice(len(images), size=batch_size, p=probabilities)
    xs = np.empty((batch_size, 1, crop_size, crop_size), np.float32)
    ys = np.empty((batch_size, crop_size, crop_size), np.int64)
    ws = None if pixel_weights is None else np.empty((batch_size, crop_size, crop_size), np.float32)
    for b, i in enumerate(idx):
        parts = [images[i], classes[i]] + ([] if ws is None else [pixel_weights[i]])
        parts = random_crop(parts, crop_size, rng)
        k = int(rng.integers(0, 8))
        xs[b, 0] = intensity(dihedral(parts[0], k), rng)
        ys[b] = dihedral(parts[1], k)
        if ws is not None:
            ws[b] = dihedral(parts[2], k)
    return xs, ys, ws, idx
