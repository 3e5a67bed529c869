"""Reading and writing images and label images, and the network's intensity normalisation.

Reading goes through OpenCV (PNG, JPEG, BMP) and tifffile (TIFF); writing label images
goes through tifffile (uint16 TIFF, readable by Fiji and napari). Every write is atomic: the
data goes to a temporary file in the destination folder, which is then renamed, so a killed
job never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import tifffile

from ..errors import ImageReadError, NucleisegError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a microscopy image as it is stored.

    Parameters
    ----------
    path : path to a PNG, TIFF, JPEG or BMP file.
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
    if path.suffix.lower() in (".tif", ".tiff"):
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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    The rename is atomic on POSIX file systems, so ``path`` either does not exist or is complete,
    even if the process is killed while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_label_image(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label image as an uncompressed TIFF, atomically.

    ``labels`` (H, W) integer, non-negative; stored as uint16 when the largest label fits,
    else uint32 (both read by Fiji, napari, tifffile and imageio).
    """
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) <= 65535 else np.uint32
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, labels.astype(dtype), photometric="minisblack"))


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label image as a 16-bit grayscale PNG, atomically.

    Raises
    ------
    NucleisegError
        if a label exceeds 65535 (PNG holds at most 16 bits; use TIFF), so a batch reports the
        image and goes on.
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) > 65535:
        raise NucleisegError(f"{path}: labels above 65535 do not fit a 16-bit PNG; write TIFF instead")
    write_png(path, labels.astype(np.uint16))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W) uint8/uint16 or (H, W, 3) uint8 RGB image as PNG, atomically."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _write(tmp: Path) -> None:
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        buf.tofile(tmp)

    atomic_write(path, _write)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Collapse an image to one float32 channel: alpha dropped, colour channels averaged.

    ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype -> (H, W) float32, same units.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        channels = image.shape[2]
        if channels in (2, 4):  # gray + alpha or RGBA: drop alpha
            image = image[:, :, : channels - 1]
        image = image.astype(np.float32).mean(axis=2)
    return image.astype(np.float32, copy=False)


def normalize_image(image: np.ndarray, p_low: float = 1.0, p_high: float = 99.8) -> np.ndarray:
    """The network's input normalisation: gray, percentile-stretched to [0, 1], nuclei bright.

    The image is reduced to one channel (:func:`to_gray_float`), stretched so that the
    ``p_low`` and ``p_high`` percentiles map to 0 and 1 (then clipped), and inverted when its
    median is above 0.5, i.e. when the background is light (brightfield, H&E histology), so
    that nuclei are bright on dark as in fluorescence images.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array, C in 1..4, uint8, uint16 or float.
    p_low, p_high : percentiles (0..100) mapped to 0 and 1.

    Returns
    -------
    (H, W) float32 in [0, 1]. A constant image gives all zeros.
    """
    return apply_normalization(image, normalization_params(image, p_low, p_high))


def normalization_params(image: np.ndarray, p_low: float = 1.0, p_high: float = 99.8,
                         max_pixels: int | None = None) -> tuple[float, float, bool]:
    """(low, high, invert) of :func:`normalize_image` for ``image``, to apply block by block.

    With ``max_pixels``, larger images are measured on a regular subsample (every s-th row and
    column, s chosen so at most ``max_pixels`` pixels are read): exact for smaller images, and
    for whole-slide images a percentile estimate that never loads more than one gray copy of
    the subsample.
    """
    h, w = image.shape[:2]
    step = 1 if not max_pixels or h * w <= max_pixels else int(np.ceil(np.sqrt(h * w / max_pixels)))
    gray = to_gray_float(image[::step, ::step])
    lo, hi = (float(v) for v in np.percentile(gray, [p_low, p_high]))
    if hi <= lo:
        return lo, hi, False
    invert = bool(np.median(np.clip((gray - lo) / (hi - lo), 0.0, 1.0)) > 0.5)
    return lo, hi, invert


def apply_normalization(image: np.ndarray, params: tuple[float, float, bool]) -> np.ndarray:
    """Gray, stretch ``(low, high)`` to [0, 1], clip, invert when asked: (H, W) float32."""
    lo, hi, invert = params
    gray = to_gray_float(image)
    if hi <= lo:
        return np.zeros_like(gray)
    out = np.clip((gray - lo) / (hi - lo), 0.0, 1.0)
    if invert:
        out = 1.0 - out
    return out.astype(np.float32)


def image_to_rgb8(image: np.ndarray) -> np.ndarray:
    """An 8-bit RGB view of any image for overlays: (H, W, 3) uint8, min-max stretched per image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[:, :, : image.shape[2] - 1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    img = image.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)
    img = img.astype(np.uint8)
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img
