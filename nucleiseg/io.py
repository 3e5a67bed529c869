"""Writing files so that nothing half-written ever looks finished, and the names of outputs.

Every writer here puts its data into a temporary file in the destination folder and renames it
into place (``os.replace``, atomic on POSIX file systems), so a killed job leaves either the
complete file or none. Label images are written as TIFF through tifffile (readable by Fiji,
napari, tifffile and imageio) or as 16-bit PNG through OpenCV.

The files one predicted image gives in an output folder are named here, once
(:func:`output_paths`), for the single-process and the Dask paths alike.
"""

from __future__ import annotations

import csv
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import NucleisegError

#: Label image file formats ``predict`` writes: uint16 / uint32 TIFF, or 16-bit PNG.
LABEL_FORMATS = ("tif", "png")

#: File name endings of the other per-image outputs, after the ImageId.
OVERLAY_SUFFIX = "_overlay.png"
NUCLEI_TABLE_SUFFIX = "_nuclei.csv"


class OutputPaths(NamedTuple):
    """The files one predicted image has in an output folder."""

    labels: Path  # <ImageId>.tif or <ImageId>.png
    overlay: Path  # <ImageId>_overlay.png
    nuclei_table: Path  # <ImageId>_nuclei.csv


def output_paths(out: str | os.PathLike, image_id: str, label_format: str = "tif") -> OutputPaths:
    """Paths of ``image_id``'s label image, overlay and per-nucleus table in folder ``out``.

    Raises
    ------
    NucleisegError
        if ``label_format`` is not one of :data:`LABEL_FORMATS`.
    """
    if label_format not in LABEL_FORMATS:
        raise NucleisegError(f"label format must be one of {', '.join(LABEL_FORMATS)}, got {label_format!r}")
    out = Path(out)
    return OutputPaths(out / f"{image_id}.{label_format}", out / f"{image_id}{OVERLAY_SUFFIX}",
                       out / f"{image_id}{NUCLEI_TABLE_SUFFIX}")


def is_side_output(name: str) -> bool:
    """Whether a file name is an overlay or a per-nucleus table rather than a label image."""
    return name.endswith(OVERLAY_SUFFIX) or name.endswith(NUCLEI_TABLE_SUFFIX)


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

    ``labels`` (H, W) non-negative integers; stored as uint16 when the largest label fits, else
    uint32 (both read by Fiji, napari, tifffile and imageio).
    """
    import tifffile

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


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label image in the format its suffix names (.tif / .tiff or .png), atomically."""
    if Path(path).suffix.lower() == ".png":
        write_label_png(path, labels)
    else:
        write_label_image(path, labels)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W) uint8 / uint16 or (H, W, 3) uint8 RGB image as PNG, atomically."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _write(tmp: Path) -> None:
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        buf.tofile(tmp)

    atomic_write(path, _write)


def write_table(path: str | os.PathLike, table: dict[str, np.ndarray] | Sequence[dict],
                columns: Sequence[str] | None = None) -> None:
    """Write a table as CSV, atomically: a dict of equal-length columns, or a list of row dicts.

    ``columns`` orders the header (and gives it when there is no row); by default the dict's
    keys, or the first row's. Floats are written with 6 significant digits, NaN as empty.
    """
    if isinstance(table, dict):
        names = list(columns or table)
        rows = [dict(zip(table, values)) for values in zip(*table.values())]
    else:
        rows = list(table)
        names = list(columns or (rows[0] if rows else []))

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{float(v):.6g}"
        return v.item() if isinstance(v, np.generic) else v

    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            for row in rows:
                writer.writerow([fmt(row[k]) for k in names])

    atomic_write(path, _write)
