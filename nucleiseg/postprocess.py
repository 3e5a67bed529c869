"""Marker-controlled watershed: from the 3-class probabilities to a label image.

After the DSB2018 winning solution (https://github.com/selimsef/dsb2018_topcoders): markers are
the connected components of the (mask - border) probability above ``marker_threshold``;
``skimage.segmentation.watershed`` floods the inverted (mask - border) probability from them,
restricted to the foreground (mask + border probability above ``mask_threshold``); holes are
filled, objects smaller than ``min_area`` pixels are dropped (:func:`drop_small_objects`, the one
minimum-size rule, also used by the watershed tuning), and labels are renumbered 1..N.

With ``marker_h`` > 0, a marker component is split where its shape has several centres: the
markers are the h-maxima (depth ``marker_h`` pixels) of the Euclidean distance transform of the
above-threshold region, the classic split of touching blobs (Soille, *Morphological Image
Analysis*, 2nd ed., 2003, sec. 9.4 and 6.3.4; scikit-image's watershed example), and every
component without such a maximum keeps one marker of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from .targets.border import BORDER, INTERIOR


@dataclass(frozen=True)
class WatershedParams:
    """Post-processing parameters; a model file stores the values tuned for it.

    Attributes
    ----------
    marker_threshold : float
        Watershed marker threshold: connected components of P(mask - border) above it seed one
        nucleus each (probability, 0..1).
    mask_threshold : float
        Foreground threshold: the watershed floods only where P(mask - border) + P(border) is
        above it (probability, 0..1).
    min_area : int
        Smallest nucleus kept, in pixels; smaller objects are dropped.
    marker_h : float
        Depth, in pixels, of the distance-transform maxima that split one marker component into
        several (see the module docstring); 0 = one marker per component.
    """

    marker_threshold: float = 0.6
    mask_threshold: float = 0.5
    min_area: int = 15
    marker_h: float = 0.0

    def __post_init__(self) -> None:
        for name in ("marker_threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0 pixels, got {self.min_area}")
        if self.marker_h < 0:
            raise ValueError(f"marker_h must be >= 0 pixels, got {self.marker_h}")

    def to_dict(self) -> dict:
        """Plain data; ``marker_h`` is left out when 0 (files written before it existed)."""
        return {k: v for k, v in asdict(self).items() if k != "marker_h" or v}

    @classmethod
    def from_dict(cls, d: dict) -> "WatershedParams":
        """From :meth:`to_dict`'s output; raises KeyError, TypeError or ValueError on bad entries."""
        split = {"marker_h": float(d["marker_h"])} if "marker_h" in d else {}
        return cls(float(d["marker_threshold"]), float(d["mask_threshold"]), int(d["min_area"]), **split)


def probabilities_to_labels(probabilities: np.ndarray, params: WatershedParams | None = None) -> np.ndarray:
    """Split nuclei with a marker-controlled watershed.

    Parameters
    ----------
    probabilities : (3, H, W) float, channels (mask - border, border, background), e.g. a softmax.
    params : thresholds and minimum area; :class:`WatershedParams` defaults when None.

    Returns
    -------
    (H, W) int32 label image, 0 = background, nuclei 1..N with no empty label.

    Raises
    ------
    ValueError
        if ``probabilities`` is not (3, H, W).
    """
    p = params or WatershedParams()
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != 3:
        raise ValueError(f"probabilities must be (3, H, W), got {probabilities.shape}")
    interior = probabilities[INTERIOR].astype(np.float32)
    foreground = (probabilities[INTERIOR] + probabilities[BORDER]) > p.mask_threshold
    markers, n = _markers((interior > p.marker_threshold) & foreground, p.marker_h)
    if n == 0:
        return np.zeros(interior.shape, dtype=np.int32)
    return clean_labels(_flood(-interior, markers, foreground), p.min_area)


def _flood(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, markers, mask=mask)``, run on each 4-connected
    component of ``mask`` that holds a marker, in its bounding box. Flooding never leaves a
    component of the mask (the watershed's default connectivity is also 4) and within one the
    pixels keep their order, so the labels are scikit-image's wherever no two marker pixels tie
    in ``image`` (scikit-image queues all markers at one age, so among equal values its order
    depends on the whole image; here only on the component, so a nucleus's outline does not
    depend on what else a block holds). A component holding one marker label is flooded whole by
    it, which is what the watershed would do, without calling it: most nuclei stand alone, and the
    call costs about 0.4 ms each (on 2304 x 2304 px of H&E probabilities, 3,161 nuclei in 2,089
    components; 2-core AMD EPYC). The watershed then visits the foreground of touching nuclei only."""
    components, n = ndimage.label(mask)
    seeded = (markers > 0) & (components > 0)
    span = int(markers.max(initial=0)) + 1
    pairs = np.unique(components[seeded].astype(np.int64) * span + markers[seeded])
    component, marker = pairs // span, (pairs % span).astype(np.int32)
    count = np.bincount(component, minlength=n + 1)
    alone = np.zeros(n + 1, np.int32)
    one = count[component] == 1
    alone[component[one]] = marker[one]
    labels = alone[components]
    boxes = ndimage.find_objects(components)
    for c in np.flatnonzero(count > 1).tolist():
        box = boxes[c - 1]
        inside = components[box] == c
        flooded = watershed(image[box], np.where(inside, markers[box], 0), mask=inside)
        labels[box][inside] = flooded[inside]
    return labels


def _markers(seeds: np.ndarray, h: float) -> tuple[np.ndarray, int]:
    """Watershed markers of the boolean ``seeds``: its connected components, or with ``h`` > 0 the
    h-maxima of its distance transform, plus one marker for each component without one."""
    components, n = ndimage.label(seeds)
    if h <= 0 or n == 0 or seeds.all():
        return components, n
    from skimage.morphology import h_maxima

    from .targets.distance import edt

    peaks, m = ndimage.label(h_maxima(edt(seeds).astype(np.float32), h).astype(bool) & seeds)
    missing = np.ones(n + 1, bool)
    missing[np.unique(components[peaks > 0])] = False
    missing[0] = False
    if missing.any():
        ids = np.zeros(n + 1, np.int32)
        ids[missing] = np.arange(m + 1, m + 1 + int(missing.sum()))
        peaks = np.where(peaks > 0, peaks, ids[components])
    return peaks, m + int(missing.sum())


def drop_small_objects(labels: np.ndarray, min_area: int, areas: np.ndarray | None = None) -> np.ndarray:
    """``labels`` with every object of fewer than ``min_area`` pixels set to 0 (not renumbered).

    ``labels`` (H, W) non-negative integers; ``areas``, if given, is ``np.bincount(labels.ravel())``
    (pass it to filter one label image with several minimum sizes). Returns ``labels`` itself
    when nothing is dropped, else a new array of its dtype.
    """
    if min_area <= 0:
        return labels
    small = _too_small(np.bincount(labels.ravel()) if areas is None else areas, min_area)
    return np.where(small[labels], 0, labels).astype(labels.dtype, copy=False) if small.any() else labels


def _too_small(areas: np.ndarray, min_area: int) -> np.ndarray:
    """Which labels (index into ``areas``, pixel counts by label) are dropped: fewer than
    ``min_area`` pixels; never the background, 0."""
    small = areas < min_area
    small[0] = False
    return small


def clean_labels(labels: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Fill holes in each object, drop objects under ``min_area`` pixels, renumber 1..N.

    ``labels`` (H, W) non-negative integers -> (H, W) int32.
    """
    labels = np.asarray(labels).astype(np.int32)
    objects = ndimage.find_objects(labels)
    enclosed = _holes(labels > 0)
    for lab, sl in enumerate(objects, start=1):
        if sl is None or not enclosed[sl].any():  # an object's holes are holes of the foreground
            continue
        obj = labels[sl] == lab
        filled = ndimage.binary_fill_holes(obj)
        holes = filled & ~obj & (labels[sl] == 0)
        if holes.any():
            labels[sl][holes] = lab
    areas = np.bincount(labels.ravel())  # drop_small_objects, then renumbered in order, in one table
    kept = (areas > 0) & ~_too_small(areas, min_area)
    kept[0] = False
    renumber = np.zeros(areas.size, np.int32)
    renumber[kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
    return renumber[labels]


def _holes(foreground: np.ndarray) -> np.ndarray:
    """The pixels ``scipy.ndimage.binary_fill_holes(foreground)`` adds: background components
    (4-connected, its default) that do not touch the image's edge; by labelling the background
    once instead of dilating from the edge until nothing changes."""
    if foreground.size == 0:
        return foreground.copy()
    background, n = ndimage.label(~foreground)
    inner = np.ones(n + 1, bool)
    inner[0] = False
    inner[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    return inner[background]
