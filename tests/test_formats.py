"""Annotation layouts in the wild: images/ + masks/, Cellpose, Aperio ImageScope XML, DSB2018;
what each reader makes of hand-made annotations, and the commands that accept them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import make_dsb_item, write_png
from nucleiseg.cli import main
from nucleiseg.data.aperio import read_aperio_xml
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.layouts import open_collection, require_collection
from nucleiseg.data.sources import LabelSource, bundled_samples_dir, iter_image_paths
from nucleiseg.errors import AnnotationError


def _xml(regions: list[list[tuple[float, float]]]) -> str:
    """ImageScope XML with one region per list of (X, Y) corners."""
    body = "".join(
        f'<Region Id="{k + 1}" Type="0"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in corners) + "</Vertices></Region>"
        for k, corners in enumerate(regions))
    return (f'<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>{body}</Regions>'
            "</Annotation></Annotations>")


def test_aperio_xml_matches_poly2mask_documented_examples(tmp_path):
    """MATLAB's poly2mask reference page ("Note on Rectangular Polygons"): corners 4 and 10 on a
    12 x 12 grid give rows and columns 5..10 (1-based); corners 3.5 and 10.5 give 4..10. And a
    polygon whose corners fall between pixel centres covers its own area: no outline pixels."""
    (tmp_path / "a.xml").write_text(_xml([[(4, 4), (10, 4), (10, 10), (4, 10)]]))
    (tmp_path / "b.xml").write_text(_xml([[(3.5, 3.5), (10.5, 3.5), (10.5, 10.5), (3.5, 10.5)]]))
    a, _ = read_aperio_xml(tmp_path / "a.xml", (12, 12))
    b, _ = read_aperio_xml(tmp_path / "b.xml", (12, 12))
    expected_a = np.zeros((12, 12), np.uint16)
    expected_a[4:10, 4:10] = 1  # 1-based 5..10
    expected_b = np.zeros((12, 12), np.uint16)
    expected_b[3:10, 3:10] = 1  # 1-based 4..10
    np.testing.assert_array_equal(a, expected_a)
    np.testing.assert_array_equal(b, expected_b)
    # a diamond with corners off the grid covers about its area (2 * 6.3^2 = 79.4 px); with its
    # outline pixels added it would cover about 18 px more (half its 35.6 px perimeter)
    c = 20.4
    (tmp_path / "c.xml").write_text(_xml([[(c - 6.3, c), (c, c - 6.3), (c + 6.3, c), (c, c + 6.3)]]))
    diamond, _ = read_aperio_xml(tmp_path / "c.xml", (40, 40))
    assert abs(int((diamond > 0).sum()) - 2 * 6.3 ** 2) <= 6


def test_aperio_xml_overlap_degenerate_and_outside(tmp_path):
    # X (column), Y (row) in MATLAB's 1-based pixel coordinates, as MoNuSeg's own conversion reads
    # them (poly2mask); pixel index = coordinate - 1, and an edge through pixel centres keeps the
    # pixels below / right of it (poly2mask's rule): corners 2 and 6 give indices 2..5
    square = [(2, 2), (6, 2), (6, 6), (2, 6)]
    shifted = [(5, 2), (9, 2), (9, 6), (5, 6)]  # indices 5..8: shares column 5 with the first
    line = [(1, 10), (5, 10), (9, 10)]  # three collinear corners: no area
    two = [(3, 12), (4, 12)]  # two corners
    edge = [(17, 10), (22, 10), (22, 14), (17, 14)]  # reaches past the 20-column image
    (tmp_path / "a.xml").write_text(_xml([square, shifted, line, two, edge]))
    labels, defects = read_aperio_xml(tmp_path / "a.xml", (16, 20))
    expected = np.zeros((16, 20), np.uint16)
    expected[2:6, 2:6] = 1
    expected[2:6, 6:9] = 2  # the shared column 5 stays with region 1, the earlier one
    expected[10:14, 17:20] = 3  # clipped at the image's right edge
    np.testing.assert_array_equal(labels, expected)
    found = {(d.kind, d.mask) for d in defects}
    assert found == {("overlap", "region 2"), ("degenerate", "region 3"), ("degenerate", "region 4"),
                     ("outside", "region 5")}
    overlap = next(d for d in defects if d.kind == "overlap")
    assert "4 px already in label(s) [1]" in overlap.detail  # rows 2..5 x column 5
    (tmp_path / "bad.xml").write_text("<Annotations><Region><Vertex X='a' Y='1'/></Region>")
    with pytest.raises(AnnotationError, match="bad.xml: not a readable ImageScope XML"):
        read_aperio_xml(tmp_path / "bad.xml", (4, 4))


@pytest.fixture()
def three_layouts(tmp_path, sample_ids, sample_labels) -> dict[str, Path]:
    """The same two bundled samples in the images/ + masks/, Cellpose and Aperio-like layouts
    (the Aperio one with one square polygon per image), and a DSB2018 folder."""
    ids = sample_ids[:2]
    out = {name: tmp_path / name for name in ("stardist", "cellpose", "aperio", "dsb")}
    for image_id in ids:
        image = bundled_samples_dir() / "images" / f"{image_id}.png"
        labels = sample_labels[image_id]
        (out["stardist"] / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, out["stardist"] / "images" / f"{image_id}.png")
        (out["stardist"] / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(out["stardist"] / "masks" / f"{image_id}.tif", labels, compression="zlib")
        out["cellpose"].mkdir(exist_ok=True)
        shutil.copy(image, out["cellpose"] / f"{image_id}.png")
        write_png(out["cellpose"] / f"{image_id}_masks.png", labels.astype(np.uint16))
        out["aperio"].mkdir(exist_ok=True)
        tifffile.imwrite(out["aperio"] / f"{image_id}.tif", read_image(image)[..., :3], photometric="rgb",
                         compression="lzw")
        (out["aperio"] / f"{image_id}.xml").write_text(_xml([[(10, 10), (40, 10), (40, 40), (10, 40)]]))
        make_dsb_item(out["dsb"], image_id, read_image(image)[..., 2::-1], [labels == k for k in np.unique(labels) if k])
    return out


def test_layouts_are_told_apart(three_layouts, sample_ids, sample_labels):
    ids = sample_ids[:2]
    for name, layout in (("stardist", "images+masks"), ("cellpose", "cellpose"), ("aperio", "aperio"),
                         ("dsb", "dsb2018")):
        found = require_collection(three_layouts[name])
        assert found.layout == layout and found.ids() == ids, name
        if name != "aperio":
            for image_id in ids:
                np.testing.assert_array_equal(found.labels(image_id) > 0, sample_labels[image_id] > 0)
        assert [i for i, _ in iter_image_paths([three_layouts[name]])] == ids  # predict sees the images only
        assert LabelSource(three_layouts[name]).ids() == ids  # score sees the annotations
    square = require_collection(three_layouts["aperio"]).labels(ids[0])
    assert square.max() == 1 and (square == 1).sum() == 30 * 30  # 1-based corners 10, 40: indices 10..39
    assert (square[10:40, 10:40] == 1).all()
    assert open_collection(bundled_samples_dir() / "images") is None  # a flat folder of images
    with pytest.raises(AnnotationError, match="expected one of these layouts"):
        require_collection(bundled_samples_dir() / "images")


def test_commands_accept_every_layout(tmp_path, three_layouts, sample_ids, sample_labels):
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(three_layouts["cellpose"]), str(tmp_path / "conv"), "--licence", "CC0 1.0"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "conv" / "provenance.json").read_text())
    assert record["layout"] == "cellpose" and record["images"] == 2 and record["provenance"]["licence"] == "CC0 1.0"
    for image_id in sample_ids[:2]:
        np.testing.assert_array_equal(read_label_image(tmp_path / "conv" / "labels" / f"{image_id}.tif") > 0,
                                      sample_labels[image_id] > 0)
    r = runner.invoke(main, ["-q", "predict", str(three_layouts["aperio"]), "-o", str(tmp_path / "pred"), "--no-overlay"])
    assert r.exit_code == 0 and "2 images labeled" in r.output, r.output
    # Cellpose-named predictions score against an images/ + masks/ truth
    for image_id in sample_ids[:2]:
        shutil.copy(tmp_path / "pred" / f"{image_id}.tif", tmp_path / "pred" / f"{image_id}_cp_masks.tif")
        (tmp_path / "pred" / f"{image_id}.tif").unlink()
    r = runner.invoke(main, ["-q", "score", str(three_layouts["stardist"]), str(tmp_path / "pred"), "--json"])
    report = json.loads(r.stdout)
    assert r.exit_code == 0 and report["n_images"] == 2 and not report["missing"]
    assert set(report["aggregation"]) >= {"score", "aji", "pq", "ap50"}


def test_provenance_of_the_known_collections(tmp_path, sample_ids):
    from nucleiseg.data.provenance import identify, monuseg2018_images, monuseg2018_validation_ids

    assert identify(tmp_path, sample_ids).licence == "CC0 1.0"  # DSB2018 stage1_train images
    train = [n for n, row in monuseg2018_images().items() if row["split"] == "train"]
    assert len(train) == 30 and len(monuseg2018_images()) == 44
    assert str(identify(tmp_path, train[:3])) == "MoNuSeg 2018 train (CC BY-NC-SA 4.0)"
    held = monuseg2018_validation_ids()
    organs = {monuseg2018_images()[n]["organ"] for n in held}
    assert len(held) == 7 and organs == {"breast", "kidney", "liver", "prostate", "bladder", "colon", "stomach"}
    unknown = identify(tmp_path / "mine", ["a", "b"])
    assert unknown.name == "mine" and unknown.licence.startswith("unknown")
    assert identify(tmp_path, ["a"], name="ours", licence="internal").licence == "internal"


def test_evaluate_on_the_bundled_samples(monkeypatch, sample_ids, sample_labels):
    """The evaluate table's rows equal an independent scoring of the model's and the baseline's
    labels of the bundled samples; the model's training collections and licences are listed."""
    from nucleiseg import load_model
    from nucleiseg.evaluation import DATA_ENV
    from nucleiseg.inference.classical import classical_labels
    from nucleiseg.metrics import image_metrics

    monkeypatch.delenv(DATA_ENV, raising=False)
    r = CliRunner().invoke(main, ["-q", "evaluate", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    rows = {(row["method"], row["group"]): row for row in result["rows"]}
    assert {row["set"] for row in result["rows"]} == {"bundled samples"}
    model = load_model(device="cpu")
    for method, segment in (("bundled model", model.predict), ("classical baseline", classical_labels)):
        metrics = [image_metrics(sample_labels[i], segment(read_image(bundled_samples_dir() / "images" / f"{i}.png")))
                   for i in sample_ids]
        row = rows[method, "all"]
        assert row["n_images"] == 8 and row["n_nuclei"] == sum(m.n_true for m in metrics)
        for key, field in (("dsb", "dsb_score"), ("ap50", "ap50"), ("aji", "aji"), ("pq", "pq")):
            assert row[key] == pytest.approx(np.mean([getattr(m, field) for m in metrics]), abs=1e-12)
    assert rows["bundled model", "all"]["dsb"] == pytest.approx(0.4551, abs=5e-5)  # the README's figure
    assert {g for _, g in rows} == {"all", "fluorescence", "brightfield", "histology"}
    assert result["trained_on"][0]["licence"] == "CC0 1.0" and result["sets"][0]["provenance"]["licence"] == "CC0 1.0"


@pytest.mark.slow
def test_evaluate_monuseg_test_set(monuseg_root):
    """The bundled model on MoNuSeg 2018 test against the truth rasterised by the organisers' rule
    (poly2mask; README "Accuracy on images it never saw")."""
    from nucleiseg import load_model
    from nucleiseg.evaluation import evaluate_method, evaluation_sets

    test = next(s for s in evaluation_sets(monuseg=monuseg_root) if s.name == "MoNuSeg 2018 test")
    assert len(test.image_ids) == 14 and test.provenance.licence == "CC BY-NC-SA 4.0"
    row = evaluate_method("bundled", load_model(device="cpu").predict, test)[0]
    assert row.n_nuclei == 6697
    assert (row.dsb, row.ap50, row.aji, row.pq) == pytest.approx((0.3556, 0.6788, 0.6415, 0.6147), abs=0.002)
