"""Training-time sampling and augmentation of (normalised image, class map) crops.

Geometric: random crop (with random scale 0.7..1.4 half of the time), then one of the 8 dihedral
transforms (flips and 90-degree rotations). Intensity: gamma, contrast, brightness and Gaussian
noise on the normalised [0, 1] image.
"""

from __future__ import annotations

import cv2
import numpy as np


def random_crop(
    image: np.ndarray, classes: np.ndarray, size: int, rng: np.random.Generator, scale_range=(0.7, 1.4)
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop of an (H, W) float32 image and its (H, W) uint8 class map.

    Half the time the crop covers ``size / s`` pixels of the source, ``s`` drawn from
    ``scale_range``, resized to ``size`` (linear for the image, nearest for the classes).
    Images smaller than the window are mirror-padded.
    """
    scale = rng.uniform(*scale_range) if rng.random() < 0.5 else 1.0
    win = max(8, int(round(size / scale)))
    h, w = image.shape
    if h < win or w < win:
        ph, pw = max(0, win - h), max(0, win - w)
        image = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if (ph < h and pw < w) else "edge")
        classes = np.pad(classes, ((0, ph), (0, pw)), mode="reflect" if (ph < h and pw < w) else "edge")
        h, w = image.shape
    r = int(rng.integers(0, h - win + 1))
    c = int(rng.integers(0, w - win + 1))
    img = image[r : r + win, c : c + win]
    cls = classes[r : r + win, c : c + win]
    if win != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        cls = cv2.resize(cls, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, cls


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


def sample_batch(images, classes, weights, batch_size: int, crop_size: int, rng: np.random.Generator):
    """Draw a batch: images chosen with probability ``weights``, each cropped and augmented.

    Returns (batch_size, 1, crop, crop) float32 inputs and (batch_size, crop, crop) int64 classes,
    plus the chosen indices.
    """
    idx = rng.choice(len(images), size=batch_size, p=weights)
    xs = np.empty((batch_size, 1, crop_size, crop_size), np.float32)
    ys = np.empty((batch_size, crop_size, crop_size), np.int64)
    for b, i in enumerate(idx):
        img, cls = random_crop(images[i], classes[i], crop_size, rng)
        k = int(rng.integers(0, 8))
        xs[b, 0] = intensity(dihedral(img, k), rng)
        ys[b] = dihedral(cls, k)
    return xs, ys, idx
