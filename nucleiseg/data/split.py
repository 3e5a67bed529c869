"""Image modality and the fixed DSB2018 validation split.

Modality (a heuristic on the stored image, used for stratifying and for per-modality scores):

- ``histology``: coloured image (:func:`nucleiseg.transforms.is_colour`: mean |max - min| over
  RGB channels above 12 grey levels of 255), e.g. H&E stained tissue with purple nuclei on pink;
- ``brightfield``: grey image whose median is above the middle of its range (light background);
- ``fluorescence``: grey image with a dark background (the majority of DSB2018).

The validation split of ``stage1_train`` is the committed list ``dsb2018_validation.txt`` (one
ImageId per line). It was made once by :func:`make_validation_split`: within each stratum
(modality x image size) the images are ordered by SHA-1 of their ImageId and the first
``round(fraction * n)`` (fraction 0.15; at least one in strata of three or more images, none in
smaller ones) are held out.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from importlib import resources

import numpy as np

from ..transforms import is_colour, to_gray_float

MODALITIES = ("fluorescence", "brightfield", "histology")


def modality(image: np.ndarray) -> str:
    """Classify an image as 'fluorescence', 'brightfield' or 'histology' (see module docstring).

    ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype.
    """
    if is_colour(image):
        return "histology"
    gray = to_gray_float(image)
    lo, hi = float(gray.min()), float(gray.max())
    if hi > lo and (float(np.median(gray)) - lo) / (hi - lo) > 0.5:
        return "brightfield"
    return "fluorescence"


def _hash(image_id: str) -> str:
    return hashlib.sha1(image_id.encode()).hexdigest()


def make_validation_split(strata: dict[str, tuple], fraction: float = 0.15) -> list[str]:
    """Pick validation ImageIds: per stratum, the first ``round(fraction * n)`` by SHA-1.

    A stratum of three or more images gives at least one; smaller strata give none.

    ``strata`` maps ImageId -> stratum key (e.g. (modality, height, width)). Returns sorted ids.
    """
    groups: dict[tuple, list[str]] = defaultdict(list)
    for image_id, key in strata.items():
        groups[key].append(image_id)
    chosen = []
    for ids in groups.values():
        ids = sorted(ids, key=_hash)
        n = round(fraction * len(ids))
        chosen += ids[: max(n, 1 if len(ids) >= 3 else 0)]
    return sorted(chosen)


def validation_ids() -> frozenset[str]:
    """The committed DSB2018 stage1_train validation ImageIds."""
    text = resources.files("nucleiseg.data").joinpath("dsb2018_validation.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
