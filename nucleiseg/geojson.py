"""GeoJSON (RFC 7946) as QuPath reads and writes it: label images to polygons and back.

Coordinates are pixels of the image, x = column and y = row, with pixel (r, c) covering the
square [c, c + 1) x [r, r + 1) (QuPath's convention; its centre is (c + 0.5, r + 0.5)).

**Writing** (:func:`label_features`, :func:`write_geojson`): one Feature per nucleus, a Polygon (a
MultiPolygon for a nucleus in several pieces) traced by marching squares (the rings of
``skimage.measure.find_contours`` at level 0.5 on the nucleus's binary mask, all nuclei traced in
one pass by :func:`nucleiseg.outlines.label_rings`), so outlines run
along pixel edges with the corners cut diagonally (area 1/8 pixel smaller per convex corner);
holes are kept. Rings are closed, exteriors counter-clockwise and holes clockwise in (x, y)
(``shapely.geometry.polygon.orient``, RFC 7946 section 3.1.6), and every polygon is checked
valid with shapely. ``properties``: QuPath's ``objectType`` ("detection"), ``classification``
({"name": "Nucleus"}), ``name`` (the label) and ``measurements`` (:func:`nucleiseg.measure.measure_nuclei`
values; NaN ones left out, JSON has no NaN). A FeatureCollection is what QuPath's
"File > Import objects" opens (QuPath 0.4 and later).

**Reading** (:func:`read_geojson`; the ``geojson`` annotation layout of ``convert`` and
``train``): a FeatureCollection, a list of Features (older QuPath exports), one Feature or one
geometry. A pixel belongs to a polygon when its centre lies inside it (holes removed). QuPath cell
objects are read through their ``nucleusGeometry``; Point / LineString features and QuPath's
"Region*" and "Ignore*" classes (areas, not nuclei) are skipped and reported, as are polygons
outside the image (clipped) and overlaps (the earlier feature keeps the pixels), with the rules
of the other readers (:class:`~nucleiseg.data.items.LabelBuilder`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import AnnotationError
from .io import GEOJSON_SUFFIX, atomic_path, atomic_write

#: QuPath object type and class of the nuclei nucleiseg writes.
OBJECT_TYPE, CLASS_NAME = "detection", "Nucleus"
#: QuPath classes that mark areas rather than objects; features of these classes are not nuclei.
AREA_CLASSES = ("Region*", "Ignore*")
#: File name endings of GeoJSON files read as annotations (nucleiseg writes the first).
GEOJSON_SUFFIXES = (GEOJSON_SUFFIX, ".json")
#: gzip level of a ``.geojson.gz``: on a slide's GeoJSON (2-core AMD EPYC, busy) level 3 made it
#: 4.3x smaller at 28 MB/s, level 6 5.3x at 8.8 MB/s, level 9 (gzip's default) 5.3x at 3.0 MB/s:
#: minutes on a gigapixel slide's 366 MB for 20 % less.
GZIP_LEVEL = 3


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a block's features are built: they are
    hundreds of thousands of small lists and dicts without cycles, and the collections their
    allocation triggers cost 10x the building (0.15 against 0.01 s for a 2048 px block's
    outlines, 2-core AMD EPYC). Restored as it was on exit."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _polygon_geometry(rings: list[np.ndarray], exterior: list[bool]):
    """The shapely Polygon or MultiPolygon of one nucleus's closed (K, 2) rings (exteriors
    counter-clockwise, holes clockwise: each hole goes into the exterior that contains it), or
    None when there is no exterior."""
    from shapely.geometry import MultiPolygon, Polygon

    exteriors = [r for r, e in zip(rings, exterior) if e]
    holes = [r for r, e in zip(rings, exterior) if not e]
    polygons = [Polygon(e) for e in exteriors]
    inner: list[list[np.ndarray]] = [[] for _ in polygons]
    for hole in holes:
        point = Polygon(hole).representative_point()
        for i, shell in enumerate(polygons):
            if shell.contains(point):
                inner[i].append(hole)
                break
    polygons = [Polygon(e, h) if h else p for e, h, p in zip(exteriors, inner, polygons)]
    if not polygons:
        return None
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _label_geometries(rings, offset: tuple[int, int], scale: float) -> dict[int, dict]:
    """{label: GeoJSON geometry} of every nucleus marching squares outlines validly (see the
    module docstring), from its :func:`~nucleiseg.outlines.label_rings`, in image coordinates moved
    by ``offset`` (row, col) and times ``scale``.
    A nucleus of one ring is a simple polygon by construction (marching-squares rings never
    cross); nuclei of several rings (holes, pieces) are assembled and checked by shapely."""
    from shapely.geometry import mapping

    points = (rings.points + np.array([offset[1], offset[0]], np.float64)) * scale
    first = np.searchsorted(rings.labels, np.arange(1, len(rings.boxes) + 2))
    geometries = {}
    for label in np.unique(rings.labels).tolist():
        a, b = first[label - 1], first[label]
        if b - a == 1 and rings.exterior[a]:
            geometries[label] = {"type": "Polygon",
                                 "coordinates": [points[rings.starts[a]:rings.starts[a + 1]].tolist()]}
            continue
        geometry = _polygon_geometry([points[rings.starts[i]:rings.starts[i + 1]] for i in range(a, b)],
                                     rings.exterior[a:b].tolist())
        if geometry is not None and geometry.is_valid:  # else left out, never written broken
            geometries[label] = mapping(geometry)
    return geometries


def label_features(labels: np.ndarray, measurements: dict[str, np.ndarray] | None = None,
                   offset: tuple[int, int] = (0, 0), label_offset: int = 0, scale: float = 1.0,
                   rings=None) -> list[dict]:
    """GeoJSON Features of the nuclei of a label image (see the module docstring).

    Parameters
    ----------
    labels : (H, W) non-negative integer label image.
    measurements : optional table from :func:`nucleiseg.measure.measure_nuclei` (its ``label``
        column matches the labels); each nucleus's row goes into ``properties.measurements``.
    offset : (row, col) of ``labels[0, 0]`` in the image the coordinates refer to (a block of a
        slide), pixels.
    label_offset : added to each label for the Feature's name and ``measurements.label``.
    scale : coordinates (after ``offset``) are multiplied by it: a slide's level predicted at
        ``scale`` level-0 pixels per pixel, written in level-0 coordinates.
    rings : :func:`nucleiseg.outlines.label_rings` of ``labels``, when already traced; None:
        traced here.

    Returns
    -------
    list of dict, one Feature per nucleus in label order.

    Raises
    ------
    ValueError
        if ``labels`` is not 2-D or has negative values.
    """
    from .outlines import label_rings

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    integer = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)  # no copy of a huge label image
    features = []
    with _collector_paused():
        rows = _measurement_rows(measurements)
        geometries = _label_geometries(label_rings(integer) if rings is None else rings, offset, scale)
        for label, geometry in geometries.items():
            name = label + label_offset
            properties = {"objectType": OBJECT_TYPE, "classification": {"name": CLASS_NAME}, "name": str(name),
                          "measurements": {"label": name} | rows.get(label, {})}
            features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return features


def _measurement_rows(measurements: dict[str, np.ndarray] | None) -> dict[int, dict[str, float]]:
    """{label: {column: value}} of a :func:`nucleiseg.measure.measure_nuclei` table, every value
    a float, NaN ones left out (JSON has no NaN)."""
    import math

    if measurements is None:
        return {}
    columns = {k: np.asarray(v, np.float64).tolist() for k, v in measurements.items() if k != "label"}
    return {int(label): {k: column[i] for k, column in columns.items() if math.isfinite(column[i])}
            for i, label in enumerate(np.asarray(measurements["label"]).tolist())}


def write_geojson(path: str | os.PathLike, labels: np.ndarray,
                  measurements: dict[str, np.ndarray] | None = None) -> None:
    """Write the nuclei of ``labels`` as a GeoJSON FeatureCollection (:func:`label_features`),
    atomically; a path ending in ``.gz`` is gzip-compressed.

    Raises
    ------
    ValueError
        as :func:`label_features`.
    """
    collection = {"type": "FeatureCollection", "features": label_features(labels, measurements)}
    text = json.dumps(collection, separators=(",", ":"), default=_plain)
    if str(path).endswith(".gz"):
        import gzip

        atomic_write(path, lambda tmp: tmp.write_bytes(gzip.compress(text.encode(), GZIP_LEVEL)))
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))


def encode_features(features: list[dict]) -> str:
    """GeoJSON text of ``features``, comma-separated without the brackets: what
    :func:`feature_writer`'s ``add`` takes. Text crosses process boundaries far more cheaply than
    the dicts (a 2304 px slide block's 3,000 nuclei: 2.8 MB pickled and unpickled in 0.2 s)."""
    return json.dumps(features, separators=(",", ":"), default=_plain)[1:-1]


@contextmanager
def feature_writer(path: str | os.PathLike) -> Iterator[Callable[[str], None]]:
    """Write a GeoJSON FeatureCollection part by part (a slide's nuclei, block by block),
    atomically: yields ``add(text)``, ``text`` being :func:`encode_features` of some features;
    the file appears complete at ``path`` when the block exits without error. A path ending in
    ``.gz`` is gzip-compressed (QuPath 0.4+ opens ``.geojson.gz``). The same text as
    :func:`write_geojson` for the same features."""
    import gzip

    with atomic_path(path) as tmp:
        gz = str(path).endswith(".gz")
        with (gzip.open(tmp, "wt", GZIP_LEVEL, "utf-8") if gz else open(tmp, "w", encoding="utf-8")) as f:
            f.write('{"type":"FeatureCollection","features":[')
            empty = True

            def add(text: str) -> None:
                nonlocal empty
                if text:
                    f.write(("" if empty else ",") + text)
                    empty = False

            yield add
            f.write("]}")


def _plain(value):
    """JSON for NumPy scalars and the tuples shapely's ``mapping`` gives."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_features(path: str | os.PathLike) -> list[dict]:
    """The Features of a GeoJSON file (gzip-compressed when its name ends in ``.gz``), whatever
    top level QuPath wrote (see the module docstring).

    Raises
    ------
    AnnotationError
        if the file is missing, not JSON, or not GeoJSON.
    """
    import gzip

    path = Path(path)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable GeoJSON file ({type(exc).__name__}: {exc})") from None
    return _features(data, path)


def features_extent(features: list[dict]) -> tuple[int, int]:
    """(H, W) in pixels that holds every polygon corner of ``features`` (nucleus outlines of cells)."""
    corners = [np.asarray(ring, np.float64).reshape(-1, 2)
               for f in features for polygon in _polygons(_geometry(f)) for ring in polygon[:1]]
    if not corners:
        return 0, 0
    xy = np.concatenate(corners)
    return int(np.ceil(max(xy[:, 1].max(), 0))), int(np.ceil(max(xy[:, 0].max(), 0)))


def _features(data, path: Path) -> list[dict]:
    """The Features of any GeoJSON top level QuPath writes."""
    if isinstance(data, list):
        return [f if f.get("type") == "Feature" else {"type": "Feature", "geometry": f, "properties": {}}
                for f in data if isinstance(f, dict)]
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: not GeoJSON (top level is a {type(data).__name__})")
    kind = data.get("type")
    if kind == "FeatureCollection":
        return [f for f in data.get("features") or [] if isinstance(f, dict)]
    if kind == "Feature":
        return [data]
    if kind in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString",
                "GeometryCollection"):
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise AnnotationError(f"{path}: not GeoJSON (type {kind!r})")


def _geometry(feature: dict) -> dict:
    """A feature's nucleus outline: QuPath cells' ``nucleusGeometry``, else its ``geometry``."""
    geometry = feature.get("nucleusGeometry") or feature.get("geometry") or {}
    return geometry if isinstance(geometry, dict) else {}


def _polygons(geometry: dict) -> list[list]:
    """The Polygon coordinate lists of a Polygon, MultiPolygon or GeometryCollection."""
    kind = geometry.get("type")
    if kind == "Polygon":
        return [geometry.get("coordinates") or []]
    if kind == "MultiPolygon":
        return list(geometry.get("coordinates") or [])
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries") or [] for p in _polygons(g)]
    return []


def _ring_pixels(ring: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool over the box of ``shape`` at ``origin`` (row, col): pixels whose centre lies
    inside a ring of (x, y) image corners."""
    from skimage.draw import polygon

    inside = np.zeros(shape, bool)
    inside[polygon(ring[:, 1] - 0.5 - origin[0], ring[:, 0] - 0.5 - origin[1], shape)] = True
    return inside


def read_geojson(path: str | os.PathLike, shape: tuple[int, int],
                 features: list[dict] | None = None) -> tuple[np.ndarray, list]:
    """Rasterise the polygons of a GeoJSON file into a label image (see the module docstring).

    Parameters
    ----------
    path : the .geojson / .json file (QuPath export or :func:`write_geojson`).
    shape : (H, W) of its image, in pixels.
    features : the file's features when already read (:func:`read_features`), else read here.

    Returns
    -------
    labels : (H, W) uint16 (uint32 past 65535 features); kept features get labels 1, 2, ... in
        file order.
    defects : list of :class:`~nucleiseg.data.items.Defect`.

    Raises
    ------
    AnnotationError
        if the file is missing, not JSON, or not GeoJSON.
    """
    from .data.items import Defect, LabelBuilder

    path = Path(path)
    features = read_features(path) if features is None else features
    built = LabelBuilder(tuple(shape), len(features))
    h, w = shape
    for n, feature in enumerate(features, start=1):
        properties = feature.get("properties") or {}
        name = f"feature {properties.get('name') or feature.get('id') or f'#{n}'}"
        cls = (properties.get("classification") or {}).get("name") if isinstance(properties.get("classification"), dict) else None
        if cls in AREA_CLASSES:
            built.defects.append(Defect("region", name, f"class {cls} marks an area, not a nucleus; skipped"))
            continue
        geometry = _geometry(feature)
        polygons = _polygons(geometry)
        if not polygons:
            built.defects.append(Defect("degenerate", name, f"{geometry.get('type')} geometry, not a polygon; skipped"))
            continue
        try:
            rings = [[np.asarray(r, np.float64).reshape(-1, 2) for r in p] for p in polygons if p]
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}, {name}: coordinates are not (x, y) number pairs") from None
        corners = np.concatenate([p[0] for p in rings]) if rings else np.zeros((0, 2))
        if corners.size and ((corners < 0).any() or (corners[:, 0] > w).any() or (corners[:, 1] > h).any()):
            built.defects.append(Defect("outside", name, f"corners outside the {h}x{w} image; clipped"))
        if not corners.size:
            built.add(np.zeros(0, int), np.zeros(0, int), name)
            continue
        # rasterise inside the polygon's bounding box, clipped to the image
        r0, c0 = max(0, int(np.floor(corners[:, 1].min()))), max(0, int(np.floor(corners[:, 0].min())))
        r1, c1 = min(h, int(np.ceil(corners[:, 1].max())) + 1), min(w, int(np.ceil(corners[:, 0].max())) + 1)
        box = (max(0, r1 - r0), max(0, c1 - c0))
        mask = np.zeros(box, bool)
        for polygon_rings in rings:
            part = _ring_pixels(polygon_rings[0], (r0, c0), box)
            for hole in polygon_rings[1:]:
                part &= ~_ring_pixels(hole, (r0, c0), box)
            mask |= part
        rows, cols = np.nonzero(mask)
        built.add(rows + r0, cols + c0, name)
    return built.labels, built.defects
