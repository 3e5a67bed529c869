"""Training data in memory: samples, the validation split, and how often each image is drawn.

Data: a folder written by ``nucleiseg convert`` (``train/*.npz``) or a DSB2018 root folder.
Validation: the committed DSB2018 split (:func:`nucleiseg.data.split.validation_ids`); for
other data (no ImageId in that list) the same stratified rule picks 15% of the given images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dsb2018 import is_dsb2018_root, iter_dsb2018
from ..data.split import make_validation_split, modality, validation_ids
from ..errors import NucleisegError
from ..progress import Progress, no_progress
from ..targets.border import class_map
from ..targets.weightmap import unet_weight_map
from ..transforms import normalize_image
from .config import Sampling

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One training or validation image, normalised, with its targets."""

    image_id: str
    image: np.ndarray  # (H, W) float32 in [0, 1]
    classes: np.ndarray  # (H, W) uint8: 0 mask - border, 1 border, 2 background
    labels: np.ndarray  # (H, W) uint16 label image
    modality: str
    pixel_weights: np.ndarray | None = None  # (H, W) float32 U-Net weight map, when used


def load_samples(data: str | Path, border_width: int, p_low: float, p_high: float,
                 progress: Progress = no_progress) -> list[Sample]:
    """Read every image of a converted folder or a DSB2018 folder into memory.

    An unreadable DSB2018 item is logged (warning) and left out.

    Raises
    ------
    NucleisegError
        if ``data`` holds neither layout or no readable image.
    """
    data = Path(data)
    out = []
    if (data / "train").is_dir():
        paths = sorted((data / "train").glob("*.npz"))
        for path in progress(paths, len(paths), "load"):
            with np.load(path) as z:
                image, labels = z["image"], z["labels"]
                classes = z["classes"] if int(z["border_width"]) == border_width else class_map(labels, border_width)
            out.append(Sample(path.stem, normalize_image(image, p_low, p_high), classes, labels, modality(image)))
    elif is_dsb2018_root(data):
        for item in progress(iter_dsb2018(data), None, "load"):
            if isinstance(item, NucleisegError):
                logger.warning("skipped: %s", item)
                continue
            out.append(Sample(item.image_id, normalize_image(item.image, p_low, p_high),
                              class_map(item.labels, border_width), item.labels, modality(item.image)))
    else:
        raise NucleisegError(f"{data}: neither a 'nucleiseg convert' output (train/*.npz) nor a DSB2018 folder")
    if not out:
        raise NucleisegError(f"{data}: no training image found")
    return out


def split_samples(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) by the committed DSB2018 split, or the same rule on other data."""
    held = validation_ids() & {s.image_id for s in samples}
    if not held:
        held = set(make_validation_split({s.image_id: (s.modality, *s.image.shape) for s in samples}))
    if not held or len(held) == len(samples):
        held = {samples[-1].image_id}
    train = [s for s in samples if s.image_id not in held] or samples
    return train, [s for s in samples if s.image_id in held]


def sampling_weights(samples: list[Sample], sampling: Sampling) -> np.ndarray:
    """Probability of drawing each sample: (N,) float64 summing to 1.

    ``"balanced"``: proportional to sqrt(pixels) / sqrt(samples of its modality), so large
    images and rare modalities are drawn more often than uniformly; ``"uniform"``: all alike.
    """
    if sampling == "balanced":
        counts = {m: sum(s.modality == m for s in samples) for m in {s.modality for s in samples}}
        weights = np.array([math.sqrt(s.image.size) / math.sqrt(counts[s.modality]) for s in samples])
    else:
        weights = np.ones(len(samples))
    return weights / weights.sum()


def add_weight_maps(samples: list[Sample], w0: float, sigma: float) -> None:
    """Set each sample's ``pixel_weights`` to its U-Net weight map (Ronneberger et al. 2015,
    eq. 2; ``sigma`` in pixels), computed once here: a few seconds for all of stage1_train."""
    for s in samples:
        s.pixel_weights = unet_weight_map(s.labels, w0, sigma)
