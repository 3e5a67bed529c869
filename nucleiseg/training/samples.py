"""Training data in memory: samples, the validation split, and how often each image is drawn.

Data: one or more collections, each a folder written by ``nucleiseg convert`` (``train/*.npz``)
or labeled images in any layout of :mod:`nucleiseg.data.layouts`. Validation, per collection:
the committed DSB2018 split (:func:`nucleiseg.data.split.validation_ids`) and MoNuSeg 2018
subset (:func:`nucleiseg.data.provenance.monuseg2018_validation_ids`) where the collection holds
their images; otherwise the stratified rule of :func:`nucleiseg.data.split.make_validation_split`
picks 15% of its images.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.layouts import open_collection
from ..data.provenance import Provenance, identify, monuseg2018_validation_ids
from ..data.split import make_validation_split, modality, validation_ids
from ..errors import NucleisegError
from ..progress import Progress, no_progress
from ..targets.border import class_map
from ..targets.weightmap import unet_weight_map
from ..transforms import InputChannels, network_input
from .config import Sampling

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One training or validation image, normalised, with its targets."""

    image_id: str
    image: np.ndarray  # (C, H, W) float32 in [0, 1], the network input
    classes: np.ndarray  # (H, W) uint8: 0 mask - border, 1 border, 2 background
    labels: np.ndarray  # (H, W) uint16 label image
    modality: str
    pixel_weights: np.ndarray | None = None  # (H, W) float32 U-Net weight map, when used
    collection: str = ""  # name of the collection it comes from


def load_samples(data: str | Path, border_width: int, p_low: float, p_high: float,
                 progress: Progress = no_progress, collection: str = "", channels: InputChannels = "gray"
                 ) -> list[Sample]:
    """Read every image of a converted folder or a labeled collection into memory, as network
    inputs of ``channels`` (:func:`nucleiseg.transforms.network_input`).

    An unreadable image is logged (warning) and left out. ``collection`` names the samples'
    collection.

    Raises
    ------
    NucleisegError
        if ``data`` holds neither a converted folder nor a known layout, or no readable image.
    """
    data = Path(data)
    out = []
    if (data / "train").is_dir():
        paths = sorted((data / "train").glob("*.npz"))
        for path in progress(paths, len(paths), "load"):
            with np.load(path) as z:
                image, labels = z["image"], z["labels"]
                classes = z["classes"] if int(z["border_width"]) == border_width else class_map(labels, border_width)
            out.append(Sample(path.stem, network_input(image, channels, p_low, p_high), classes, labels,
                              modality(image), collection=collection))
    elif (found := open_collection(data)) is not None:
        for item in progress(found.items(), len(found.ids()), "load"):
            if isinstance(item, NucleisegError):
                logger.warning("skipped: %s", item)
                continue
            out.append(Sample(item.image_id, network_input(item.image, channels, p_low, p_high),
                              class_map(item.labels, border_width), item.labels, modality(item.image),
                              collection=collection))
    else:
        raise NucleisegError(f"{data}: neither a 'nucleiseg convert' output (train/*.npz) nor labeled images in a "
                             "known layout (DSB2018, images/ + masks/, Cellpose, Aperio XML)")
    if not out:
        raise NucleisegError(f"{data}: no training image found")
    return out


def at_diameter(sample: Sample, diameter: float, border_width: int) -> Sample:
    """``sample`` resized so the median equivalent diameter of its nuclei
    (:func:`nucleiseg.labels.median_diameter`) is ``diameter`` pixels, the factor clipped to
    :data:`nucleiseg.inference.predictor.SCALE_RANGE` as at inference: the network input by
    :func:`nucleiseg.transforms.resize`, the label image by nearest pixel, the classes made anew
    from it. A sample without nuclei is returned as it is."""
    from ..inference.predictor import SCALE_RANGE
    from ..labels import median_diameter
    from ..transforms import resize, resize_labels

    own, n = median_diameter(sample.labels)
    if not n:
        return sample
    scale = float(np.clip(diameter / own, *SCALE_RANGE))
    h, w = sample.labels.shape
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    labels = resize_labels(sample.labels, shape)
    return replace(sample, image=resize(sample.image, shape), labels=labels, classes=class_map(labels, border_width),
                   pixel_weights=None)


def collection_provenance(data: str | Path) -> Provenance:
    """The provenance of the collection in ``data`` (a converted folder or a known layout)."""
    data = Path(data)
    if (data / "train").is_dir():
        return identify(data, (p.stem for p in (data / "train").glob("*.npz")))
    found = open_collection(data)
    return identify(data, found.ids() if found else ())


def split_samples(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) of one collection: its images in the committed DSB2018 or MoNuSeg
    2018 validation lists, or else the stratified rule on its images (at least one held out)."""
    held = (validation_ids() | monuseg2018_validation_ids()) & {s.image_id for s in samples}
    if not held:
        held = set(make_validation_split({s.image_id: (s.modality, *s.image.shape[-2:]) for s in samples}))
    if not held or len(held) == len(samples):
        held = {samples[-1].image_id}
    train = [s for s in samples if s.image_id not in held] or samples
    return train, [s for s in samples if s.image_id in held]


def sampling_weights(samples: list[Sample], sampling: Sampling,
                     collection_weights: dict[str, float] | None = None) -> np.ndarray:
    """Probability of drawing each sample: (N,) float64 summing to 1.

    Within a collection, ``"balanced"`` draws proportionally to sqrt(pixels) / sqrt(samples of its
    modality), so large images and rare modalities are drawn more often than uniformly, and
    ``"uniform"`` draws all alike. With several collections, each is drawn with probability
    proportional to its entry of ``collection_weights`` (missing: 1), whatever its size.
    """
    names = sorted({s.collection for s in samples})
    if sampling == "balanced":  # modalities counted within each collection
        counts = Counter((s.collection, s.modality) for s in samples)
        weights = np.array([math.sqrt(s.labels.size) / math.sqrt(counts[s.collection, s.modality]) for s in samples])
    else:
        weights = np.ones(len(samples))
    if len(names) == 1:
        return weights / weights.sum()
    member = np.array([s.collection for s in samples])
    out = np.zeros(len(samples))
    for name in names:
        inside = member == name
        out[inside] = weights[inside] / weights[inside].sum() * (collection_weights or {}).get(name, 1.0)
    return out / out.sum()


def add_weight_maps(samples: list[Sample], w0: float, sigma: float) -> None:
    """Set each sample's ``pixel_weights`` to its U-Net weight map (Ronneberger et al. 2015,
    eq. 2; ``sigma`` in pixels), computed once here: a few seconds for all of stage1_train."""
    for s in samples:
        s.pixel_weights = unet_weight_map(s.labels, w0, sigma)


def load_collections(paths: list[str | Path], border_width: int, p_low: float, p_high: float,
                     weights: tuple[float, ...] = (), progress: Progress = no_progress,
                     channels: InputChannels = "gray") -> tuple[list[Sample], list[Sample], list[dict]]:
    """Load and split each collection of ``paths``: (training samples, validation samples, one
    record per collection). A record holds the collection's provenance (its ``name`` made unique),
    its folder, training and validation image counts and its sampling ``weight`` (``weights`` in
    order, or 1 each).

    Raises
    ------
    NucleisegError
        for unreadable data, or a number of weights other than the number of collections.
    """
    if weights and len(weights) != len(paths):
        raise NucleisegError(f"{len(weights)} collection weights for {len(paths)} DATA folders: give one per folder")
    train_set: list[Sample] = []
    val_set: list[Sample] = []
    records: list[dict] = []
    for i, path in enumerate(paths):
        provenance = collection_provenance(path)
        name = provenance.name if all(r["name"] != provenance.name for r in records) else f"{provenance.name} #{i + 1}"
        train, val = split_samples(load_samples(path, border_width, p_low, p_high, progress, name, channels))
        train_set += train
        val_set += val
        records.append({**provenance.to_dict(), "name": name, "path": str(path), "n_train": len(train),
                        "n_validation": len(val), "weight": weights[i] if weights else 1.0})
    return train_set, val_set, records
