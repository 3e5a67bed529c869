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
import functools
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
GEOJSON_SUFFIX = ".geojson"
#: The GeoJSON gzip-compressed (``predict --geojson-gz``), which QuPath 0.4+ imports as it is.
GEOJSON_GZ_SUFFIX = ".geojson.gz"


class OutputPaths(NamedTuple):
    """The files one predicted image has in an output folder."""

    labels: Path  # <ImageId>.tif or <ImageId>.png
    overlay: Path  # <ImageId>_overlay.png
    nuclei_table: Path  # <ImageId>_nuclei.csv
    geojson: Path  # <ImageId>.geojson, or <ImageId>.geojson.gz


def output_paths(out: str | os.PathLike, image_id: str, label_format: str = "tif",
                 geojson_gz: bool = False) -> OutputPaths:
    """Paths of ``image_id``'s label image, overlay, per-nucleus table and GeoJSON (gzip-compressed
    with ``geojson_gz``) in folder ``out``.

    Raises
    ------
    NucleisegError
        if ``label_format`` is not one of :data:`LABEL_FORMATS`.
    """
    if label_format not in LABEL_FORMATS:
        raise NucleisegError(f"label format must be one of {', '.join(LABEL_FORMATS)}, got {label_format!r}")
    out = Path(out)
    return OutputPaths(out / f"{image_id}.{label_format}", out / f"{image_id}{OVERLAY_SUFFIX}",
                       out / f"{image_id}{NUCLEI_TABLE_SUFFIX}",
                       out / f"{image_id}{GEOJSON_GZ_SUFFIX if geojson_gz else GEOJSON_SUFFIX}")


def is_side_output(name: str) -> bool:
    """Whether a file name is an overlay, a per-nucleus table or a GeoJSON file rather than a label image."""
    return name.endswith((OVERLAY_SUFFIX, NUCLEI_TABLE_SUFFIX, GEOJSON_SUFFIX, GEOJSON_GZ_SUFFIX))


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


#: TIFF ``Software`` tag of the label images nucleiseg writes (how its napari reader knows them).
LABEL_SOFTWARE = "nucleiseg"
#: Label images with a side longer than this (pixels) get a multi-resolution pyramid.
PYRAMID_MIN_SIDE = 8192
#: Pyramid levels halve the image until its long side is at most this (pixels).
PYRAMID_SMALLEST_SIDE = 1024


def pyramid_levels(shape: tuple[int, int]) -> int:
    """Number of reduced levels (each half the previous, every other pixel) for a label image of
    ``shape``: 0 up to :data:`PYRAMID_MIN_SIDE`, else until the long side is at most
    :data:`PYRAMID_SMALLEST_SIDE`."""
    if max(shape) <= PYRAMID_MIN_SIDE:
        return 0
    return int(np.ceil(np.log2(max(shape) / PYRAMID_SMALLEST_SIDE)))


def ome_metadata(axes: str, pixel_size: float | None) -> dict:
    """tifffile's OME ``metadata`` for an image of ``axes`` ("YX", "YXS"), with ``pixel_size``
    (micrometres per pixel) as OME-XML ``PhysicalSizeX`` / ``PhysicalSizeY`` in µm."""
    metadata = {"axes": axes}
    if pixel_size is not None:
        metadata |= {"PhysicalSizeX": pixel_size, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": pixel_size,
                     "PhysicalSizeYUnit": "µm"}
    return metadata


def resolution_tags(pixel_size: float | None, factor: float = 1) -> dict:
    """tifffile's ``resolution`` / ``resolutionunit`` arguments (pixels per centimetre, TIFF 6.0
    section 8) for a level ``factor`` times coarser than ``pixel_size`` micrometres per pixel;
    {} without a pixel size."""
    if pixel_size is None:
        return {}
    per_cm = 1e4 / (pixel_size * factor)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def write_label_tiff(path: str | os.PathLike, labels: np.ndarray, pixel_size: float | None = None) -> None:
    """Write ``labels`` (an (H, W) integer array or memory map, written as its dtype) as TIFF at
    ``path`` (not atomic: see :func:`write_label_image`).

    With ``pixel_size`` (micrometres per pixel) the file is OME-TIFF (OME-XML ``PhysicalSizeX`` /
    ``PhysicalSizeY`` in µm, read by Fiji's Bio-Formats, napari and QuPath) and its TIFF resolution
    tags say the same in pixels per centimetre (ImageJ's own TIFF reader). Images with a side over
    :data:`PYRAMID_MIN_SIDE` get a pyramid of reduced levels in SubIFDs (OME-TIFF's pyramid layout;
    labels reduced by taking every other pixel, so values stay labels); level 0 stays contiguous
    and uncompressed, so the file can be memory-mapped (``tifffile.memmap``).

    Raises
    ------
    ValueError
        if ``pixel_size`` is not positive.
    """
    import tifffile

    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"pixel size must be > 0 micrometres, got {pixel_size}")
    n_levels = pyramid_levels(labels.shape)
    ome = pixel_size is not None or n_levels > 0
    with tifffile.TiffWriter(path, ome=ome) as tif:
        tif.write(labels, photometric="minisblack", subifds=n_levels or None,
                  metadata=ome_metadata("YX", pixel_size) if ome else None, software=LABEL_SOFTWARE,
                  **resolution_tags(pixel_size))
        for level in range(1, n_levels + 1):
            step = 2**level
            tif.write(np.ascontiguousarray(labels[::step, ::step]), photometric="minisblack", subfiletype=1,
                      **resolution_tags(pixel_size, step))


def write_label_image(path: str | os.PathLike, labels: np.ndarray, pixel_size: float | None = None) -> None:
    """Write a label image as an uncompressed TIFF, atomically (:func:`write_label_tiff`: OME-TIFF
    with ``pixel_size``, micrometres per pixel; a pyramid for very large images).

    ``labels`` (H, W) non-negative integers; stored as uint16 when the largest label fits, else
    uint32 (both read by Fiji, napari, tifffile and imageio).
    """
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) <= 65535 else np.uint32
    atomic_write(path, lambda tmp: write_label_tiff(tmp, labels.astype(dtype, copy=False), pixel_size))


def write_label_memmap(path: str | os.PathLike, shape: tuple[int, int], fill: Callable[[np.ndarray], None],
                       pixel_size: float | None = None) -> np.ndarray:
    """Write a uint32 label image too large for memory: ``fill(labels)`` writes into a
    memory-mapped (H, W) TIFF of zeros (``tifffile.memmap``), which is renamed into place when
    ``fill`` returns. With a pixel size, or a side over :data:`PYRAMID_MIN_SIDE` (a pyramid), the
    map is then copied into an OME-TIFF (:func:`write_label_tiff`) and removed.

    Returns the written file, memory-mapped read-only, (H, W) uint32. Nothing is left at
    ``path`` (nor beside it) if ``fill`` raises.
    """
    import tifffile

    path = Path(path)
    rewrite = pixel_size is not None or pyramid_levels(shape) > 0

    def fill_map(file: Path) -> np.memmap:
        mapped = tifffile.memmap(file, shape=tuple(shape), dtype=np.uint32, photometric="minisblack",
                                 software=LABEL_SOFTWARE)
        fill(mapped)
        mapped.flush()
        return mapped

    with atomic_path(path) as tmp:
        if not rewrite:
            fill_map(tmp)  # the memory map is the label image (closed when dropped)
        else:
            with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
                mapped = fill_map(Path(folder) / "blocks.tif")
                write_label_tiff(tmp, mapped, pixel_size)
                del mapped
    return tifffile.memmap(path, mode="r")


#: Tile side of the tiled label pyramids written for slides (:func:`write_label_pyramid`).
LABEL_TILE = 512


def release_pages(array: np.ndarray) -> None:
    """Let the kernel drop the resident pages of a memory-mapped ``array`` (written ones are
    flushed first), so a gigapixel map costs no more resident memory than the part in use; the
    data stays in the file. No-op for an ordinary array or where madvise is not available."""
    import mmap

    mapped = getattr(array, "_mmap", None)
    if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    array.flush()
    mapped.madvise(mmap.MADV_DONTNEED)


#: Rows of a memory-mapped array spanned by one read of :func:`strided_rows`.
RELEASE_ROWS = 256


def strided_rows(array: np.ndarray, start: int, stop: int, step: int) -> np.ndarray:
    """``array[start:stop:step, ::step]`` as a new array, read RELEASE_ROWS rows of ``array`` at a
    time with a memory map's pages released after each (:func:`release_pages`). The kernel maps
    the pages around every page a read touches (fault-around), so one strided read maps every row
    it spans, not only those it reads: every 16th row of a 32768 px label map at once held 2 GB."""
    chunk = step * max(1, RELEASE_ROWS // step)
    parts = []
    for r in range(start, stop, chunk):
        parts.append(np.array(array[r : min(r + chunk, stop) : step, ::step]))
        release_pages(array)
    return np.concatenate(parts) if parts else np.zeros((0, -(-array.shape[1] // step)), array.dtype)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


def return_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``), so that a long
    block-by-block run holds the memory of the block in use, not of the fragments earlier blocks
    left in the allocator: on an 8192 x 8192 slide (2-core AMD EPYC) after each block, the peak
    fell from 1,533 / 1,519 MB to 1,330 / 1,343 MB (two runs each). A no-op where the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def write_label_pyramid(path: str | os.PathLike, labels: np.ndarray, pixel_size: float | None = None) -> None:
    """Write a (H, W) uint32 label image, e.g. a slide's memory-mapped label map, as a tiled,
    Deflate-compressed pyramidal OME-TIFF, atomically, one band of :data:`LABEL_TILE` rows at a
    time (memory: one band; a memory map's pages are released as it is read, :func:`strided_rows`).

    Levels as :func:`write_label_tiff` (every other pixel, SubIFDs, OME ``PhysicalSize`` and
    resolution tags with ``pixel_size`` in micrometres); level 0 is tiled, so unlike
    :func:`write_label_tiff`'s files it cannot be memory-mapped, and it is a fraction of the
    size (labels compress well). Raises ValueError if ``pixel_size`` is not positive.
    """
    import tifffile

    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"pixel size must be > 0 micrometres, got {pixel_size}")
    h, w = labels.shape
    n_levels = pyramid_levels((h, w))

    def tiles(step: int):
        t = LABEL_TILE
        lh, lw = -(-h // step), -(-w // step)
        for r in range(0, lh, t):
            band = strided_rows(labels, r * step, min((r + t) * step, h), step).astype(np.uint32, copy=False)
            for c in range(0, lw, t):
                tile = np.zeros((t, t), np.uint32)
                part = band[:, c : c + t]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    def options(step: int) -> dict:
        return {"dtype": np.uint32, "tile": (LABEL_TILE, LABEL_TILE), "photometric": "minisblack",
                "compression": "zlib", "shape": (-(-h // step), -(-w // step))} | resolution_tags(pixel_size, step)

    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=h * w * 4 > 2**31, ome=True) as tif:
            tif.write(tiles(1), subifds=n_levels or None, metadata=ome_metadata("YX", pixel_size),
                      software=LABEL_SOFTWARE, **options(1))
            for level in range(1, n_levels + 1):
                tif.write(tiles(2**level), subfiletype=1, **options(2**level))


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


def write_labels(path: str | os.PathLike, labels: np.ndarray, pixel_size: float | None = None) -> None:
    """Write a label image in the format its suffix names (.tif / .tiff or .png), atomically;
    ``pixel_size`` (micrometres per pixel) makes a TIFF an OME-TIFF (PNG has no place for it)."""
    if Path(path).suffix.lower() == ".png":
        write_label_png(path, labels)
    else:
        write_label_image(path, labels, pixel_size)


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


def _csv_value(v):
    """A CSV cell: floats with 6 significant digits, NaN empty, NumPy scalars as Python ones."""
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.6g}"
    return v.item() if isinstance(v, np.generic) else v


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

    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            for row in rows:
                writer.writerow([_csv_value(row[k]) for k in names])

    atomic_write(path, _write)


@contextmanager
def table_writer(path: str | os.PathLike, columns: Sequence[str]) -> Iterator[Callable[[dict[str, np.ndarray]], None]]:
    """Write a CSV table piece by piece (a slide's nuclei, block by block), atomically: yields
    ``add(table)``, which appends the rows of a dict of equal-length columns (at least
    ``columns``); the file appears complete at ``path`` when the block exits without error.
    Values as :func:`write_table` writes them."""
    columns = list(columns)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)

            def add(table: dict[str, np.ndarray]) -> None:
                for values in zip(*(table[k] for k in columns)):
                    writer.writerow([_csv_value(v) for v in values])

            yield add
