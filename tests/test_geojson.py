"""QuPath GeoJSON both ways: schema fields, one feature per nucleus, holes and pieces, the
round trip on real predictions (IoU >= 0.95 per nucleus; here exact), QuPath's export variants,
the annotation layout for convert / train, and predict --geojson."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import shape as shapely_shape

from nucleiseg.cli import main
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.layouts import open_collection
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.geojson import label_features, read_geojson, write_geojson
from nucleiseg.inference.predictor import load_model
from nucleiseg.measure import measure_nuclei



def _per_nucleus_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([((a == k) & (b == k)).sum() / ((a == k) | (b == k)).sum() for k in range(1, a.max() + 1)])


def test_hand_made_labels_schema_hole_and_pieces(tmp_path):
    labels = np.zeros((40, 50), np.int32)
    labels[5:15, 5:15] = 1
    labels[9:11, 9:11] = 0  # a hole
    labels[20:30, 30:45] = 2
    labels[2:4, 40:42] = 3  # nucleus 3 in two pieces
    labels[6:8, 46:48] = 3
    features = label_features(labels, {"label": np.array([1, 2, 3]), "area_px": np.array([96.0, 150.0, 8.0]),
                                       "area_um2": np.array([np.nan] * 3)})
    assert len(features) == 3
    for f, k in zip(features, (1, 2, 3)):
        assert f["type"] == "Feature"
        assert f["properties"]["objectType"] == "detection"
        assert f["properties"]["classification"] == {"name": "Nucleus"}
        assert f["properties"]["measurements"]["label"] == k
        assert "area_um2" not in f["properties"]["measurements"]  # NaN has no JSON form
        geometry = shapely_shape(f["geometry"])
        assert geometry.is_valid
        # marching squares cuts each convex corner by 1/8 pixel and adds 1/8 per concave one
        assert geometry.area == pytest.approx((labels == k).sum(), abs=1.0)
    assert features[0]["geometry"]["type"] == "Polygon" and len(features[0]["geometry"]["coordinates"]) == 2
    ring = features[0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed
    # exterior counter-clockwise in (x, y), as RFC 7946 asks; the hole clockwise
    assert shapely_shape(features[0]["geometry"]).exterior.is_ccw
    assert not shapely_shape(features[0]["geometry"]).interiors[0].is_ccw
    assert features[2]["geometry"]["type"] == "MultiPolygon"
    # x is the column, y the row, pixel (r, c) covering [c, c+1) x [r, r+1)
    xs, ys = zip(*features[1]["geometry"]["coordinates"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (30.0, 45.0, 20.0, 30.0)
    write_geojson(tmp_path / "a.geojson", labels)
    back, defects = read_geojson(tmp_path / "a.geojson", labels.shape)
    np.testing.assert_array_equal(back, labels)
    assert [d.kind for d in defects] == ["disconnected"]  # nucleus 3 again, reported as the readers do


def test_round_trip_on_real_predictions(tmp_path):
    model = load_model(device="cpu")
    total = 0
    for path in sorted((bundled_samples_dir() / "images").iterdir()):
        image = read_image(path)
        labels = model.predict(image)
        write_geojson(tmp_path / "p.geojson", labels, measure_nuclei(labels, image))
        data = json.loads((tmp_path / "p.geojson").read_text())
        assert data["type"] == "FeatureCollection" and len(data["features"]) == labels.max()
        back, _ = read_geojson(tmp_path / "p.geojson", labels.shape)
        assert _per_nucleus_iou(labels, back).min() >= 0.95, path.name
        np.testing.assert_array_equal(back, labels)  # exact, in fact
        total += labels.max()
    assert total == 590  # every nucleus of the main job


def test_round_trip_on_monuseg_truth(tmp_path, monuseg_root):
    """MoNuSeg test annotations (Aperio XML) -> label image -> GeoJSON -> label image."""
    from nucleiseg.data.aperio import read_aperio_xml

    xml = sorted((monuseg_root / "test").glob("*.xml"))[0]
    image = read_image(xml.with_suffix(".tif"))
    labels, _ = read_aperio_xml(xml, image.shape[:2])
    write_geojson(tmp_path / "m.geojson", labels)
    back, _ = read_geojson(tmp_path / "m.geojson", labels.shape)
    present = np.unique(labels[labels > 0])
    assert len(json.loads((tmp_path / "m.geojson").read_text())["features"]) == len(present)
    iou = _per_nucleus_iou(labels, back)[present - 1]
    assert iou.min() >= 0.95


def test_qupath_variants_are_read(tmp_path):
    square = [[[2, 2], [8, 2], [8, 8], [2, 8], [2, 2]]]  # x, y corners: pixels 2..7 in rows and columns
    cell = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [20, 20], [0, 0]]]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [[[12, 12], [16, 12], [16, 16], [12, 16], [12, 12]]]},
            "properties": {"objectType": "cell"}}
    region = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [20, 20], [0, 20],
                                                                                   [0, 0]]]},
              "properties": {"objectType": "annotation", "classification": {"name": "Region*"}}}
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 3]}, "properties": {}}
    nucleus = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square}, "properties": {}}
    # older QuPath: a bare list of features
    (tmp_path / "list.json").write_text(json.dumps([region, nucleus, cell, point]))
    labels, defects = read_geojson(tmp_path / "list.json", (20, 20))
    expected = np.zeros((20, 20), np.uint16)
    expected[2:8, 2:8] = 1
    expected[12:16, 12:16] = 2
    np.testing.assert_array_equal(labels, expected)
    assert sorted(d.kind for d in defects) == ["degenerate", "region"]
    # a bare geometry, and a polygon partly outside the image
    (tmp_path / "g.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[[-3, 1], [4, 1], [4, 3],
                                                                                         [-3, 3], [-3, 1]]]}))
    labels, defects = read_geojson(tmp_path / "g.geojson", (10, 10))
    assert labels[1:3, 0:4].all() and labels.sum() == 8 and [d.kind for d in defects] == ["outside"]
    from nucleiseg.errors import AnnotationError

    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(AnnotationError, match="bad.geojson: not a readable GeoJSON file"):
        read_geojson(tmp_path / "bad.geojson", (10, 10))
    (tmp_path / "odd.geojson").write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(AnnotationError, match="not GeoJSON"):
        read_geojson(tmp_path / "odd.geojson", (10, 10))


def test_geojson_layout_converts_and_predict_writes_geojson(tmp_path, sample_labels):
    """predict --geojson on the bundled samples, then those files as annotations for convert."""
    out = tmp_path / "pred"
    r = CliRunner().invoke(main, ["-q", "predict", "-o", str(out), "--geojson", "--no-overlay", "--device", "cpu"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    annotated = tmp_path / "annotated"
    annotated.mkdir()
    for path in sorted((bundled_samples_dir() / "images").iterdir())[:3]:
        (annotated / path.name).write_bytes(path.read_bytes())
        (annotated / f"{path.stem}.geojson").write_bytes((out / f"{path.stem}.geojson").read_bytes())
        data = json.loads((out / f"{path.stem}.geojson").read_text())
        labels = read_label_image(out / f"{path.stem}.tif")
        assert len(data["features"]) == labels.max()
        areas = np.bincount(labels.ravel())[1:]
        assert [f["properties"]["measurements"]["area_px"] for f in data["features"]] == areas.tolist()
    collection = open_collection(annotated)
    assert collection.layout == "geojson" and len(collection.ids()) == 3
    r = CliRunner().invoke(main, ["-q", "convert", str(annotated), str(tmp_path / "conv")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for image_id in collection.ids():
        np.testing.assert_array_equal(read_label_image(tmp_path / "conv" / "labels" / f"{image_id}.tif"),
                                      read_label_image(out / f"{image_id}.tif"))


def _find_contours_rings(mask: np.ndarray) -> list[tuple]:
    """The reference: skimage's marching squares at level 0.5 on one padded binary mask, corners
    in (x, y) pixel-corner coordinates without collinear ones, each ring as a tuple of corners
    starting at its smallest (so rings compare whatever corner tracing started at)."""
    from skimage.measure import find_contours

    rings = []
    for contour in find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
        xy = np.stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5], axis=1)[:-1]
        before, after = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        xy = xy[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]
        if len(xy) >= 3:
            rings.append(_from_smallest(xy))
    return sorted(rings)


def _from_smallest(xy: np.ndarray) -> tuple:
    corners = [tuple(p) for p in xy.tolist()]
    i = corners.index(min(corners))
    return tuple(corners[i:] + corners[:i])


def test_one_pass_rings_are_find_contours_rings():
    """label_rings traces, for every label at once, the rings find_contours traces on each
    label's own mask (same corners in the same turning order), on a real prediction and on
    hand-made cases: both saddles, a hole, a ring with a nucleus inside, one-pixel and one-row
    nuclei, pieces, nuclei on the image's edges and touching each other; exteriors turn
    counter-clockwise (positive shoelace area in (x, y)) and holes clockwise."""
    from scipy import ndimage

    from nucleiseg.outlines import label_rings

    hand = np.zeros((12, 14), np.int32)
    hand[0, 0] = 1  # one pixel in the corner
    hand[1, 1] = 1  # saddle with it: face-connected only, so two rings
    hand[2:7, 3:8] = 2
    hand[4, 5] = 3  # a nucleus in the hole of 2
    hand[3:6, 4:7][hand[3:6, 4:7] == 2] = 0
    hand[4, 5] = 3
    hand[8, 0:14] = 4  # one row, both edges
    hand[0:5, 10:14] = 5
    hand[2, 12] = 0  # a hole at the centre of 5
    hand[9:12, 9:12] = 6  # touches 7
    hand[9:12, 12:14] = 7
    hand[10, 3], hand[11, 4] = 8, 8  # the other saddle
    prediction = load_model(device="cpu").predict(read_image(sorted((bundled_samples_dir() / "images").iterdir())[0]))
    for labels in (hand, prediction.astype(np.int32)):
        rings = label_rings(labels)
        assert np.all(np.diff(rings.labels) >= 0)
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            mine = []
            for i in np.nonzero(rings.labels == label)[0]:
                ring = rings.points[rings.starts[i]:rings.starts[i + 1]]
                assert np.array_equal(ring[0], ring[-1])  # closed
                x, y = ring[:, 0], ring[:, 1]
                assert (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) > 0) == rings.exterior[i]
                mine.append(_from_smallest(ring[:-1]))
            reference = [tuple((x + box[1].start, y + box[0].start) for x, y in r)
                         for r in _find_contours_rings(labels[box] == label)]
            assert sorted(mine) == sorted(reference), label
    assert label_rings(hand).exterior.tolist().count(False) == 2  # the holes of 2 and 5
    with pytest.raises(ValueError, match="integer"):
        label_rings(hand.astype(float))
