"""Reading microscopy images and label images as they are stored.

Reading goes through OpenCV (PNG, JPEG, BMP; colour returned in RGB(A) order) and tifffile
(TIFF: the first page, or a chosen page; planar (C, H, W) pages returned as (H, W, C)).
Writing lives in :mod:`nucleiseg.io`; the network's normalisation in :mod:`nucleiseg.transforms`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ..errors import ImageReadError

#: TIFF and the TIFF-based slide formats (Aperio SVS, Hamamatsu NDPI), read with tifffile.
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES


def read_image(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a microscopy image as it is stored.

    Parameters
    ----------
    path : path to a PNG, TIFF (also SVS, NDPI: their full-resolution page), JPEG or BMP file.
    channel : None for the whole image (the first page of a multi-page TIFF); an index to pick
        one page of a multi-page TIFF, or else one channel of a multi-channel image.

    Returns
    -------
    ndarray, (H, W) for grayscale or a picked channel, or (H, W, C) with C in 1..4 in RGB(A)
    order; dtype uint8, uint16 or float32 as stored.

    Raises
    ------
    ImageReadError
        if the file is missing, empty, unreadable as an image, not 2-D with 1 to 4 channels, or
        has no such channel / page.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                n_pages = len(tif.pages)
                if n_pages == 0:
                    raise ImageReadError(f"{path}: not a readable TIFF (no image in it)")
                page = channel if (channel is not None and n_pages > 1) else 0
                if page >= n_pages or page < 0:
                    raise ImageReadError(f"{path}: no page {page} (the file has {n_pages})")
                tif_page = tif.pages[page]
                image = tif_page.asarray()
                if image.ndim == 3 and tif_page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                    image = np.moveaxis(image, 0, -1)  # planar (C, H, W) -> (H, W, C)
                if channel is not None and n_pages > 1:
                    channel = None  # the page was the channel
        except ImageReadError:
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            raise ImageReadError(f"{path}: not a readable TIFF ({exc})") from None
    else:
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ImageReadError(f"{path}: not a readable image (truncated or not {path.suffix})")
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        raise ImageReadError(f"{path}: expected a 2-D image with 1 to 4 channels, got shape {image.shape}")
    if image.dtype == bool or image.dtype.kind not in "uif":
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise ImageReadError(f"{path}: image holds NaN or infinite values")
    if channel is not None:
        n = image.shape[2] if image.ndim == 3 else 1
        if not 0 <= channel < n:
            raise ImageReadError(f"{path}: no channel {channel} (the image has {n})")
        image = image[:, :, channel] if image.ndim == 3 else image
    return image


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read a label image (0 = background, k > 0 = nucleus k).

    Returns
    -------
    ndarray (H, W) of an unsigned integer type (as stored: uint8, uint16 or uint32).

    Raises
    ------
    ImageReadError
        if the file cannot be read, is not single-channel, or holds negative or non-integer labels.
    """
    labels = read_image(path)
    if labels.ndim != 2:
        raise ImageReadError(f"{path}: a label image must be single-channel, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if np.any(labels != np.round(labels)):
            raise ImageReadError(f"{path}: label image holds non-integer values")
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "i":
        if labels.size and labels.min() < 0:
            raise ImageReadError(f"{path}: label image holds negative labels")
        labels = labels.astype(np.uint32 if labels.max(initial=0) > 65535 else np.uint16)
    return labels
