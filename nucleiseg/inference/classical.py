"""A classical nucleus segmentation built from scikit-image: the floor any model must clear.

1. One channel with nuclei bright: for colour (H&E-like) images the haematoxylin channel of
   the colour deconvolution (Ruifrok & Johnston, Anal. Quant. Cytol. Histol. 23(4), 2001;
   ``skimage.color.rgb2hed``), percentile-stretched; otherwise the network's normalisation (gray,
   stretched, inverted on light backgrounds): the nuclear-stain channel of
   :func:`nucleiseg.transforms.network_input`.
2. Gaussian smoothing (``sigma`` pixels), then Otsu's threshold (Otsu, IEEE Trans. SMC 9(1),
   1979; ``skimage.filters.threshold_otsu``) as the foreground.
3. Markers at the maxima of the foreground's distance transform at least ``min_distance`` pixels
   apart (``skimage.feature.peak_local_max``), then ``skimage.segmentation.watershed`` on the
   negated distance inside the foreground; holes filled, objects under ``min_area`` pixels
   dropped, labels 1..N (:func:`nucleiseg.postprocess.clean_labels`).

The parameters are fixed, not tuned on any evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..postprocess import clean_labels
from ..transforms import network_input


@dataclass(frozen=True)
class ClassicalParams:
    """Attributes
    ----------
    sigma : float
        Gaussian smoothing before thresholding, pixels.
    min_distance : int
        Smallest distance between two markers, pixels.
    min_area : int
        Smallest nucleus kept, pixels.
    """

    sigma: float = 1.0
    min_distance: int = 5
    min_area: int = 15


def nuclei_channel(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1], nuclei bright: the stretched haematoxylin channel of a colour
    image, else the normalised gray image (the nuclear-stain channel of
    :func:`nucleiseg.transforms.network_input`)."""
    return network_input(image, "gray+haematoxylin")[1]


def classical_labels(image: np.ndarray, params: ClassicalParams | None = None) -> np.ndarray:
    """Label the nuclei of ``image`` ((H, W) or (H, W, C), C in 1..4, any numeric dtype) the
    classical way (see the module docstring). Returns (H, W) int32, 0 = background, 1..N."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    p = params or ClassicalParams()
    channel = gaussian(nuclei_channel(image), sigma=p.sigma)
    if channel.max() <= channel.min():
        return np.zeros(channel.shape, np.int32)
    foreground = ndimage.binary_fill_holes(channel > threshold_otsu(channel))
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=p.min_distance, labels=ndimage.label(foreground)[0],
                           exclude_border=False)
    markers = np.zeros(channel.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return clean_labels(watershed(-distance, markers, mask=foreground), p.min_area)
