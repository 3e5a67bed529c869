"""Training-time sampling and augmentation of (normalised image, class map) crops.

Levels (``augment=``):

- ``"none"``: random crop only;
- ``"flips"``: crop, then one of the 8 dihedral transforms (flips and 90-degree rotations);
- ``"full"`` (default): crop with random scale 0.7..1.4 half of the time, dihedral transform, and
  intensity changes on the normalised [0, 1] image: gamma, contrast, brightness, Gaussian noise;
- ``"heavy"``: ``"full"`` plus, each with probability 0.3, an elastic deformation (smooth random
  displacement field, up to about 4 px) and a Gaussian blur (sigma 0.5..1.5 px);
- ``"shift"``: for images from unseen sources (:func:`shift_intensity`): crop with random scale
  0.5..2 half of the time, dihedral transform, then per channel (so the stain channels of a
  colour input vary apart) gamma 0.5..2, contrast 0.5..1.5 and brightness -0.2..0.2; a smooth
  illumination field dimming parts of the crop to 30 %; and, each with probability 0.3, Gaussian
  blur (sigma 0.5..2 px), Gaussian noise (sigma up to 0.08) and JPEG artefacts (quality 30..90).

Inversion needs no augmentation here: light backgrounds are inverted before training and
prediction alike (:func:`nucleiseg.transforms.normalize_image`). Stain variation reaches the
network through the per-channel intensity changes of ``"shift"`` on the haematoxylin channel of a
gray + haematoxylin input (:func:`nucleiseg.transforms.network_input`), a per-channel form of the
HED-space stain jitter of Tellez et al. 2019 (Med. Image Anal. 58:101544); hue and saturation are
not varied apart from that.
"""

from __future__ import annotations

import typing
from typing import Literal

import cv2
import numpy as np

from ..transforms import dihedral, pad_to_shape, per_channel, resize_labels

AugmentLevel = Literal["none", "flips", "full", "heavy", "shift"]
AUGMENT_LEVELS: tuple[str, ...] = typing.get_args(AugmentLevel)
#: Range of the random crop scale (applied half of the time) per level.
CROP_SCALES: dict[str, tuple[float, float]] = {"none": (1.0, 1.0), "flips": (1.0, 1.0), "full": (0.7, 1.4),
                                                "heavy": (0.7, 1.4), "shift": (0.5, 2.0)}


def random_crop(
    arrays: list[np.ndarray], size: int, rng: np.random.Generator, scale_range: tuple[float, float] = (0.7, 1.4)
) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` crop of several arrays (image (C, H, W), classes and
    weights (H, W)).

    Half the time the crop covers ``size / s`` pixels of the source, ``s`` drawn from
    ``scale_range``, resized to ``size``: linear for float arrays, nearest for integer ones
    (:func:`nucleiseg.transforms.resize_labels`), both on pixel centres, so a label stays on its
    nucleus.
    Arrays smaller than the window are padded (:func:`nucleiseg.transforms.pad_to_shape`).
    """
    scale = rng.uniform(*scale_range) if rng.random() < 0.5 else 1.0
    win = max(8, int(round(size / scale)))
    arrays = [pad_to_shape(a, (win, win)) for a in arrays]
    h, w = arrays[0].shape[-2:]
    r = int(rng.integers(0, h - win + 1))
    c = int(rng.integers(0, w - win + 1))
    out = [a[..., r : r + win, c : c + win] for a in arrays]
    if win != size:
        out = [per_channel(lambda x: cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR)
                           if x.dtype.kind == "f" else resize_labels(x, (size, size)), a) for a in out]
    return out


def intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma (0.7..1.5), contrast (0.75..1.25), brightness (-0.1..0.1) and noise (sigma <= 0.03)."""
    x = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.5)
    x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), size=x.shape)
    return x.astype(np.float32)


def shift_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The intensity part of the ``"shift"`` level (see the module docstring) on a (C, H, W)
    float32 crop in [0, 1]."""
    x = np.clip(image, 0.0, 1.0)
    gamma = rng.uniform(0.5, 2.0, size=(x.shape[0], 1, 1))
    contrast = rng.uniform(0.5, 1.5, size=(x.shape[0], 1, 1))
    brightness = rng.uniform(-0.2, 0.2, size=(x.shape[0], 1, 1))
    x = x**gamma * contrast + brightness
    h, w = x.shape[-2:]
    field = cv2.resize(rng.uniform(0.3, 1.0, size=(3, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    x = x * np.clip(field, 0.3, 1.0)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.5, 2.0)
        x = per_channel(lambda c: cv2.GaussianBlur(np.ascontiguousarray(c, np.float32), (0, 0), sigma), x)
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.08), size=x.shape)
    if rng.random() < 0.3:
        quality = int(rng.integers(30, 91))
        x = per_channel(lambda c: _jpeg(c, quality), np.clip(x, 0.0, 1.0))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def dim_nuclei(image: np.ndarray, labels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Each nucleus of a (C, H, W) crop dimmed towards the background by its own factor, drawn
    from [1 - ``strength``, 1]: x' = b + f (x - b) on the nucleus's pixels (``labels`` (H, W),
    0 = background), b the median of the background pixels per channel (0 without any). Dim
    nuclei beside bright ones, as fluorescence with uneven staining and pale H&E nuclei show them."""
    n = int(labels.max())
    if n == 0 or strength <= 0:
        return image
    factors = np.ones(n + 1, np.float32)
    factors[1:] = rng.uniform(1.0 - strength, 1.0, size=n)
    background = labels == 0
    b = (np.median(image[:, background], axis=1) if background.any() else np.zeros(image.shape[0]))
    b = b.astype(np.float32)[:, None, None]
    return (b + factors[labels][None] * (image - b)).astype(np.float32)


def _jpeg(channel: np.ndarray, quality: int) -> np.ndarray:
    """One channel in [0, 1] through JPEG compression at ``quality`` and back."""
    ok, buf = cv2.imencode(".jpg", np.round(channel * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def elastic(arrays: list[np.ndarray], rng: np.random.Generator, alpha: float = 4.0, grid: int = 4) -> list[np.ndarray]:
    """The same smooth random deformation of several arrays ((H, W) or (C, H, W)).

    Displacements are drawn on a ``grid`` x ``grid`` lattice (normal, sd ``alpha / 2`` px, clipped to
    ``alpha``) and upsampled bicubically; floats are resampled linearly, integers by nearest pixel.
    """
    h, w = arrays[0].shape[-2:]
    coarse = np.clip(rng.normal(0.0, alpha / 2, size=(2, grid, grid)), -alpha, alpha).astype(np.float32)
    dy = cv2.resize(coarse[0], (w, h), interpolation=cv2.INTER_CUBIC)
    dx = cv2.resize(coarse[1], (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_y, map_x = yy + dy, xx + dx

    def move(a: np.ndarray) -> np.ndarray:
        interp = cv2.INTER_LINEAR if a.dtype.kind == "f" else cv2.INTER_NEAREST
        return cv2.remap(a.astype(np.float32), map_x, map_y, interp, borderMode=cv2.BORDER_REFLECT_101).astype(a.dtype)

    return [per_channel(move, a) for a in arrays]


def sample_batch(
    images: list[np.ndarray], classes: list[np.ndarray], probabilities: np.ndarray, batch_size: int, crop_size: int,
    rng: np.random.Generator, pixel_weights: list[np.ndarray] | None = None, augment: AugmentLevel = "full",
    idx: np.ndarray | None = None, labels: list[np.ndarray] | None = None, nucleus_dimming: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Draw a batch: images chosen with ``probabilities`` (or the given indices ``idx``), each
    cropped and augmented (``augment`` one of :data:`AUGMENT_LEVELS`, see the module docstring).
    With ``nucleus_dimming`` > 0 and the images' label images ``labels``, half of the crops have
    their nuclei dimmed apart (:func:`dim_nuclei`) before the level's intensity changes.

    ``images`` are (C, H, W) network inputs ((H, W): one channel). Returns (batch_size, C, crop, crop) float32 inputs,
    (batch_size, crop, crop) int64 classes,
    (batch_size, crop, crop) float32 pixel weights (None without ``pixel_weights``), and the
    chosen indices.
    """
    if idx is None:
        idx = rng.choice(len(images), size=batch_size, p=probabilities)
    xs = np.empty((batch_size, images[0].shape[0] if images[0].ndim == 3 else 1, crop_size, crop_size), np.float32)
    ys = np.empty((batch_size, crop_size, crop_size), np.int64)
    ws = None if pixel_weights is None else np.empty((batch_size, crop_size, crop_size), np.float32)
    dimming = nucleus_dimming > 0 and labels is not None
    for b, i in enumerate(idx):
        parts = [images[i], classes[i]] + ([] if ws is None else [pixel_weights[i]])
        if dimming:
            parts.append(labels[i])
        parts = random_crop(parts, crop_size, rng, CROP_SCALES[augment])
        if dimming and rng.random() < 0.5:
            crop = parts[0] if parts[0].ndim == 3 else parts[0][None]
            parts[0] = dim_nuclei(crop, parts[-1].astype(np.int64), nucleus_dimming, rng).reshape(parts[0].shape)
        if augment == "heavy" and rng.random() < 0.3:
            parts = elastic(parts, rng)
        k = int(rng.integers(0, 8)) if augment != "none" else 0
        image = dihedral(parts[0], k)
        if augment in ("full", "heavy"):
            image = intensity(image, rng)
        elif augment == "shift":
            image = shift_intensity(image if image.ndim == 3 else image[None], rng).reshape(image.shape)
        if augment == "heavy" and rng.random() < 0.3:
            sigma = rng.uniform(0.5, 1.5)
            image = per_channel(lambda x: cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), sigma), image)
        xs[b] = image
        ys[b] = dihedral(parts[1], k)
        if ws is not None:
            ws[b] = dihedral(parts[2], k)
    return xs, ys, ws, idx
