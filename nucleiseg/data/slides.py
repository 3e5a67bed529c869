"""Whole-slide images read lazily: pyramidal TIFF, SVS, NDPI and OME-TIFF, region by region.

A slide is opened with tifffile and each pyramid level is read through tifffile's Zarr store
(``TiffPageSeries.aszarr``, read with ``zarr``): slicing a level decodes only the tiles the
slice touches, so no level is ever held in memory whole. Why this reader rather than tiffslide
or OpenSlide: tifffile (with imagecodecs for JPEG, JPEG 2000, LZW, Deflate) already reads every
TIFF nucleiseg takes, it parses the pyramids of SVS, NDPI, OME-TIFF (SubIFDs) and generic tiled
TIFF itself, its store is thread-safe, and it adds only ``zarr`` to the dependencies;
tiffslide's OpenSlide-style API wraps the same store, and OpenSlide reads no OME-TIFF.

Pixel size (micrometres per pixel at level 0, :func:`read_pixel_size`), first found of:

- Aperio SVS: ``MPP = 0.2520`` in the first page's ImageDescription (Aperio's
  ``key = value`` fields separated by ``|``; parsed by tifffile);
- OME-TIFF: ``Pixels/@PhysicalSizeX`` with ``PhysicalSizeXUnit`` (default µm; OME data model,
  https://www.openmicroscopy.org/Schemas/OME/2016-06);
- ImageJ hyperstacks: ``unit=micron`` in the description, 1 / XResolution µm;
- TIFF resolution tags (TIFF 6.0 section 8: XResolution pixels per ResolutionUnit, 2 = inch,
  3 = centimetre), as NDPI and most scanners write them; unit 1 (none) says nothing.

Tissue detection (:func:`tissue_mask`): Otsu's threshold on the HSV saturation of a
low-resolution level, as QuPath's and HoVer-Net's slide pipelines do: glass is gray (saturation
near 0) whatever its brightness, stained tissue is coloured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, MissingDependencyError

#: A TIFF is read as a slide (lazily, block by block) when it holds a pyramid or when its
#: first level has more than this many pixels.
SLIDE_MIN_PIXELS = 64_000_000
#: Otsu's threshold on saturation (0..255) is clipped to this range: glass scans at about 0-10,
#: pale eosin at 25 and more, so an all-tissue or all-glass thumbnail (where Otsu splits noise)
#: is still told apart.
TISSUE_SATURATION_RANGE = (10, 25)

_UNITS_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "mm": 1e3, "cm": 1e4,
             "m": 1e6, "\\u00B5m": 1.0}


@dataclass(frozen=True)
class SlideInfo:
    """What :func:`open_slide` found: ``levels`` the (H, W) of each pyramid level, largest first;
    ``downsamples`` level-0 pixels per level pixel along each axis; ``channels`` 1 (gray) or 3
    (RGB); ``pixel_size`` micrometres per level-0 pixel, or None; ``dtype`` of the pixels."""

    path: Path
    levels: tuple[tuple[int, int], ...]
    downsamples: tuple[float, ...]
    channels: int
    pixel_size: float | None
    dtype: np.dtype


class Slide:
    """A pyramidal TIFF opened for lazy reading (see the module docstring); use as a context
    manager, or call :meth:`close`.

    ``slide.level(k)`` is a read-only array-like of shape (H_k, W_k) or (H_k, W_k, 3): slicing it
    (``slide.level(0)[r0:r1, c0:c1]``) reads and decodes only the tiles the slice touches and
    returns a NumPy array.
    """

    def __init__(self, path: Path, tif, series, info: SlideInfo, planar: bool, lead: int) -> None:
        self._tif, self._series, self.info, self._planar, self._lead = tif, series, info, planar, lead
        self._levels: dict[int, _Level] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of level 0, pixels."""
        return self.info.levels[0]

    def level(self, k: int = 0) -> "_Level":
        """Level ``k`` (0 = full resolution) as a lazily read array-like. Raises ValueError for no
        such level, MissingDependencyError without zarr."""
        if not 0 <= k < len(self.info.levels):
            raise ValueError(f"{self.info.path}: no level {k} (the slide has {len(self.info.levels)})")
        if k not in self._levels:
            try:
                import zarr
            except ImportError:
                raise MissingDependencyError("reading slides needs zarr 3 (Python 3.11 or later): "
                                             "pip install 'zarr>=3'") from None
            store = self._series.aszarr(level=k)
            self._levels[k] = _Level(zarr.open_array(store, mode="r"), self._planar, self._lead, self.info.path)
        return self._levels[k]

    def thumbnail_level(self, max_pixels: int = 4_000_000) -> int:
        """The largest level with at most ``max_pixels`` pixels (the smallest level if none is)."""
        for k, (h, w) in enumerate(self.info.levels):
            if h * w <= max_pixels:
                return k
        return len(self.info.levels) - 1

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Level:
    """One pyramid level: ``shape`` (H, W[, C]), ``dtype``, slicing as NumPy (module docstring)."""

    def __init__(self, array, planar: bool, lead: int, path: Path) -> None:
        self._array, self._planar, self._path = array, planar, path
        self._lead = (0,) * lead  # singleton leading axes (SVS's focal plane Z) read at index 0
        shape = tuple(array.shape)[lead:]
        self.shape = (shape[1], shape[2], shape[0]) if planar else shape
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError("a slide level is read by a 2-D slice, e.g. level[r0:r1, c0:c1]")
        try:
            if self._planar:
                return np.moveaxis(np.asarray(self._array[self._lead + (slice(None),) + key]), 0, -1)
            return np.asarray(self._array[self._lead + key])
        except Exception as exc:  # a damaged tile: the codec's or zarr's error, with where it is
            rows, cols = key
            raise ImageReadError(f"{self._path}: cannot read rows {rows.start}:{rows.stop}, columns "
                                 f"{cols.start}:{cols.stop} ({type(exc).__name__}: {exc})") from None

    def __array__(self, dtype=None, copy=None):
        out = self[0 : self.shape[0], 0 : self.shape[1]]
        return out if dtype is None else out.astype(dtype)


def is_slide(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TIFF to read as a slide: a tiled image series with more than one
    pyramid level, or with more than :data:`SLIDE_MIN_PIXELS` pixels at level 0. False for
    anything tifffile cannot open."""
    from .images import TIFF_SUFFIXES

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            h, w = _yx(series)
            return series.is_pyramidal or h * w > SLIDE_MIN_PIXELS
    except Exception:
        return False


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a pyramidal TIFF, SVS, NDPI or OME-TIFF for lazy reading.

    Returns
    -------
    :class:`Slide`, with ``.info`` (:class:`SlideInfo`: level shapes in pixels, downsamples,
    channels, pixel size in micrometres per level-0 pixel or None).

    Raises
    ------
    ImageReadError
        if the file is missing or not a readable TIFF, or its first image series is not a 2-D
        gray or RGB image (axes YX, YXS or CYX with 1 or 3 channels).
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable TIFF ({exc})") from None
    try:
        series = tif.series[0]
        lead = 0
        while lead < len(series.shape) - 2 and series.axes[lead] not in "YXCS" and series.shape[lead] == 1:
            lead += 1  # singleton leading axes: SVS's focal plane Z, OME's T or Z
        axes = series.axes[lead:]
        if axes not in ("YX", "YXS", "CYX"):
            raise ImageReadError(f"{path}: expected a 2-D gray or RGB slide (axes YX, YXS or CYX), got axes "
                                 f"{series.axes} of shape {series.shape}")
        planar = axes == "CYX"
        channels = 1 if axes == "YX" else series.shape[lead + (0 if planar else 2)]
        if channels not in (1, 3):
            raise ImageReadError(f"{path}: expected 1 or 3 channels, got {channels}")
        levels = tuple(_yx(level) for level in series.levels)
        h0, w0 = levels[0]
        downsamples = tuple(float(np.sqrt((h0 / h) * (w0 / w))) for h, w in levels)
        info = SlideInfo(path, levels, downsamples, channels, read_pixel_size(tif), np.dtype(series.dtype))
    except ImageReadError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise ImageReadError(f"{path}: not a readable slide ({exc})") from None
    return Slide(path, tif, series, info, planar, lead)


def _yx(series) -> tuple[int, int]:
    """(H, W) of a tifffile series or level of axes YX, YXS or CYX."""
    y, x = series.axes.index("Y"), series.axes.index("X")
    return int(series.shape[y]), int(series.shape[x])


def read_pixel_size(tif) -> float | None:
    """Micrometres per pixel of a TIFF's first image, from its metadata (module docstring), or
    None when the file does not say. ``tif``: an open ``tifffile.TiffFile``."""
    page = tif.pages.first
    if tif.is_svs:
        from tifffile.tifffile import svs_description_metadata

        try:
            mpp = float(svs_description_metadata(page.description).get("MPP", 0))
        except (ValueError, TypeError):
            mpp = 0.0
        if mpp > 0:
            return mpp
    if tif.is_ome and tif.ome_metadata:
        size = _ome_pixel_size(tif.ome_metadata)
        if size is not None:
            return size
    resolution = _tag_pixel_size(page)
    if resolution is None and tif.is_imagej and tif.imagej_metadata:
        unit = str(tif.imagej_metadata.get("unit", "")).lower()
        x = _resolution(page)
        if unit in _UNITS_UM and x:
            return _UNITS_UM[unit] / x
    return resolution


def _ome_pixel_size(xml: str) -> float | None:
    """PhysicalSizeX of the first OME Image, in micrometres (OME's default unit is µm)."""
    match = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if not match:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(0)))
    try:
        size = float(attrs.get("PhysicalSizeX", "nan"))
    except ValueError:
        return None
    factor = _UNITS_UM.get(attrs.get("PhysicalSizeXUnit", "µm"))
    if factor is None or not size > 0:
        return None
    return size * factor


def _resolution(page) -> float | None:
    """XResolution of ``page`` (pixels per ResolutionUnit), or None."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    return num / den if den and num else None


def _tag_pixel_size(page) -> float | None:
    """Micrometres per pixel from XResolution and ResolutionUnit (2 inch, 3 cm), or None."""
    x = _resolution(page)
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF 6.0's default unit is the inch
    if not x or unit not in (2, 3):
        return None
    size = (25_400.0 if unit == 2 else 10_000.0) / x
    # 72 or 96 dpi (353 µm, 265 µm a pixel) is a writer's default, not a microscope's scale
    return size if size < 100.0 else None


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Where a slide holds tissue, from a low-resolution image of it.

    Parameters
    ----------
    thumbnail : (h, w, 3) RGB image (uint8, uint16 or float), e.g. a low pyramid level; or (h, w)
        gray, for which everything counts as tissue (fluorescence has no glass to tell apart).

    Returns
    -------
    (h, w) bool array, True on tissue: saturation (HSV, 0..255) above Otsu's threshold clipped
    to :data:`TISSUE_SATURATION_RANGE`, small holes closed (3 x 3), and grown by one pixel.

    Source: Otsu, "A threshold selection method from gray-level histograms", IEEE Trans. SMC
    9(1), 1979, on saturation as in QuPath's and HoVer-Net's tissue detection.
    """
    import cv2
    from skimage.filters import threshold_otsu

    if thumbnail.ndim == 2 or thumbnail.shape[2] == 1:
        return np.ones(thumbnail.shape[:2], bool)
    rgb = thumbnail[..., :3]
    if rgb.dtype != np.uint8:
        top = float(rgb.max()) or 1.0
        rgb = np.clip(rgb.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    saturation = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1]
    lo, hi = TISSUE_SATURATION_RANGE
    t = float(np.clip(threshold_otsu(saturation) if saturation.min() < saturation.max() else lo, lo, hi))
    mask = (saturation > t).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return cv2.dilate(mask, kernel).astype(bool)


#: How :func:`write_slide` records the pixel size: OME-XML (pyramid in SubIFDs), an Aperio SVS
#: description (pyramid as reduced pages), or TIFF resolution tags only (pyramid in SubIFDs).
SLIDE_METADATA = ("ome", "svs", "tiff")


def write_slide(path: str | os.PathLike, image, pixel_size: float | None = None, metadata: str = "ome",
                tile: int = 256, smallest_side: int = 1024, compression: str = "jpeg") -> None:
    """Write a pyramidal, tiled TIFF as scanners do (for tests and benchmarks, or to turn a large
    image into a slide), tile by tile: ``image`` is never copied whole.

    Parameters
    ----------
    path : the file; written atomically.
    image : (H, W) or (H, W, 3) uint8: a NumPy array or anything that returns one for
        ``image[r0:r1, c0:c1]`` (e.g. a lazily built mosaic).
    pixel_size : micrometres per level-0 pixel, or None.
    metadata : one of :data:`SLIDE_METADATA`.
    tile : tile side, pixels (a multiple of 16).
    smallest_side : levels halve the image (area-averaged) until the long side is at most this.
    compression : tifffile's name: "jpeg" (as SVS scanners write), "zlib", "none", ...

    Raises
    ------
    ValueError
        for an unknown ``metadata``, a tile side that is not a multiple of 16, or an image that is
        not uint8 gray or RGB.
    """
    import tifffile

    from ..io import atomic_path, ome_metadata, resolution_tags

    if metadata not in SLIDE_METADATA:
        raise ValueError(f"metadata must be one of {', '.join(SLIDE_METADATA)}, got {metadata!r}")
    if tile % 16:
        raise ValueError(f"tile side must be a multiple of 16, got {tile}")
    shape = tuple(image.shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3) or np.dtype(image.dtype) != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) image, got {shape} {image.dtype}")
    h, w = shape[:2]
    n_levels = 0
    while max(h, w) / 2**n_levels > smallest_side:
        n_levels += 1

    photometric = "rgb" if len(shape) == 3 else "minisblack"
    description = None
    if metadata == "svs":
        description = (f"Aperio Image Library v12.0.15 \r\n{w}x{h} ({tile}x{tile}) JPEG/RGB Q=90|AppMag = 40"
                       + (f"|MPP = {pixel_size:.4f}" if pixel_size else ""))
    pixel_size = pixel_size or None  # 0 or None: no pixel size written
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=metadata == "ome") as tif:
            common = {"dtype": np.uint8, "tile": (tile, tile), "photometric": photometric, "compression": compression}
            sub = n_levels if metadata != "svs" and n_levels else None
            tif.write(_level_tiles(image, 0, tile), shape=shape, subifds=sub, description=description,
                      metadata=ome_metadata("YXS" if len(shape) == 3 else "YX", pixel_size) if metadata == "ome"
                      else None, **common, **resolution_tags(pixel_size))
            if metadata == "svs":  # Aperio's second page: a small untiled thumbnail, then the levels
                tif.write(next(_level_tiles(image, n_levels, tile)), photometric=photometric,
                          compression=compression, description=description)
            for level in range(1, n_levels + 1):
                lshape = (-(-h // 2**level), -(-w // 2**level)) + shape[2:]
                # SVS levels are plain tiled pages (Aperio's layout), OME / TIFF ones reduced SubIFDs
                tif.write(_level_tiles(image, level, tile), shape=lshape, subfiletype=0 if metadata == "svs" else 1,
                          **common, **resolution_tags(pixel_size, 2**level))


def _level_tiles(image, level: int, tile: int):
    """The tiles of pyramid ``level`` of ``image`` in raster order, each (tile, tile[, 3]) uint8,
    zero-padded past the edges; level k is level 0 area-averaged by 2**k."""
    import cv2

    h, w = image.shape[:2]
    f = 2**level
    for r in range(0, -(-h // f), tile):
        for c in range(0, -(-w // f), tile):
            block = np.asarray(image[r * f : min((r + tile) * f, h), c * f : min((c + tile) * f, w)])
            if f > 1:
                th, tw = -(-block.shape[0] // f), -(-block.shape[1] // f)
                block = cv2.resize(block, (tw, th), interpolation=cv2.INTER_AREA)
            padded = np.zeros((tile, tile) + tuple(image.shape[2:]), np.uint8)
            padded[: block.shape[0], : block.shape[1]] = block
            yield padded
