"""The command line on bundled data: convert, train (a few steps), predict and score."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from nucleiseg.cli import main
from nucleiseg.data.images import read_label_image
from nucleiseg.data.rle import read_solution_csv
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.metrics import dsb_score


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_convert_train_predict_score(tmp_path, small_dsb, sample_labels):
    data = tmp_path / "converted"
    ids = sorted(p.name for p in small_dsb.iterdir())
    shape = sample_labels[ids[1]].shape
    cv2.imwrite(str(small_dsb / ids[1] / "masks" / "zz_empty.png"), np.zeros(shape, np.uint8))  # a defect
    r = run("convert", small_dsb, data, "--to-rle", tmp_path / "labels.csv")
    assert r.exit_code == 0, r.output
    assert "converted 3 images" in r.output and "1 with annotation defects" in r.output
    assert f"defects {ids[1]}: empty: zz_empty.png" in r.output
    for image_id in ids:
        labels = read_label_image(data / "labels" / f"{image_id}.tif")
        np.testing.assert_array_equal(labels > 0, sample_labels[image_id] > 0)
        assert labels.dtype == np.uint16
        with np.load(data / "train" / f"{image_id}.npz") as z:
            assert set(np.unique(z["classes"])) <= {0, 1, 2}
    with open(data / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == ids and all(r["status"] == "ok" for r in rows)
    assert "empty" in rows[1]["defects"] and rows[0]["defects"] == ""
    rle_shapes = {i: sample_labels[i].shape for i in ids}
    from_csv = read_solution_csv(tmp_path / "labels.csv", rle_shapes)
    assert all(dsb_score(sample_labels[i], from_csv[i]) == 1.0 for i in ids)

    model = tmp_path / "m.pt"
    r = run("train", data, "--out", tmp_path / "wm.pt", "--steps", 2, "--val-every", 2, "--features", "4,8",
            "--crop-size", 32, "--batch-size", 2, "--device", "cpu", "--weight-map")
    assert r.exit_code == 0, r.output
    from nucleiseg.model.file import read_model_file

    assert read_model_file(tmp_path / "wm.pt").config.training["weight_map"] is True
    r = run("train", data, "--out", model, "--steps", 3, "--val-every", 2, "--features", "4,8,16",
            "--crop-size", 64, "--batch-size", 2, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert model.is_file() and (tmp_path / "m.pt.resume.pt").is_file() and (tmp_path / "m.pt.curve.png").is_file()
    r = run("train", data, "--out", model, "--steps", 4, "--val-every", 2, "--features", "4,8,16",
            "--crop-size", 64, "--batch-size", 2, "--device", "cpu", "--resume")
    assert r.exit_code == 0, r.output

    out = tmp_path / "pred"
    r = run("predict", small_dsb, "-o", out, "--model", model, "--rle", tmp_path / "sub.csv")
    assert r.exit_code == 0, r.output
    for image_id in ids:
        labels = read_label_image(out / f"{image_id}.tif")
        assert labels.shape == sample_labels[image_id].shape and labels.dtype == np.uint16
        found = np.unique(labels[labels > 0])
        assert (found == np.arange(1, found.size + 1)).all()  # 1..N with no gap
        assert (out / f"{image_id}_overlay.png").is_file()

    r = run("score", small_dsb, out, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_images"] == 3 and len(report["per_threshold"]) == 10
    # the report agrees with an independent scoring of the written label images, image by image
    expected = {i: dsb_score(sample_labels[i], read_label_image(out / f"{i}.tif")) for i in ids}
    assert {p["image_id"]: p["score"] for p in report["per_image"]} == pytest.approx(expected, abs=1e-12)
    assert report["score"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert [row["thresh"] for row in report["per_threshold"]] == pytest.approx([k / 20 for k in range(10, 20)])
    assert np.mean([row["mean_image_accuracy"] for row in report["per_threshold"]]) == pytest.approx(report["score"])
    # the submission CSV scores exactly as the label images it encodes
    r2 = run("score", small_dsb, tmp_path / "sub.csv", "--json")
    assert json.loads(r2.stdout)["score"] == pytest.approx(report["score"])


def test_score_identical_and_missing(tmp_path):
    labels = bundled_samples_dir() / "labels"
    r = run("score", labels, labels)
    assert r.exit_code == 0 and "DSB score 1.0000 over 8 images" in r.output
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(labels.iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    r = run("score", labels, one, "--json")
    report = json.loads(r.stdout)
    assert report["score"] == pytest.approx(1 / 8) and len(report["missing"]) == 7


def test_predict_bundled_samples_main_job(tmp_path, sample_labels):
    """The README's first command: the bundled model on the bundled samples, with the score the
    README documents (0.4551), equal to an independent scoring of the written label images."""
    r = run("predict", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "8 images labeled (590 nuclei)" in r.output
    assert r.output.rstrip().endswith("DSB score on the 8 bundled samples: 0.4551")
    scores = [dsb_score(truth, read_label_image(tmp_path / "out" / f"{i}.tif")) for i, truth in sample_labels.items()]
    assert np.mean(scores) == pytest.approx(0.4551, abs=5e-5)


def test_predict_diameter_none_is_the_original_scale(tmp_path, sample_labels):
    """--diameter none turns the default per-image rescaling off: the bundled model then gives the
    figures it gives at the original scale (559 nuclei, 0.4571), and --json reports scale 1 for
    every image; by default (auto) each image reports its estimated diameter and its factor.
    float32 asked for: the figures are float32's, on every CPU."""
    r = run("predict", "-o", tmp_path / "none", "--diameter", "none", "--no-overlay", "--precision", "fp32")
    assert r.exit_code == 0, r.output
    assert "8 images labeled (559 nuclei)" in r.output
    assert r.output.rstrip().endswith("DSB score on the 8 bundled samples: 0.4571")
    r = run("-q", "predict", "-o", tmp_path / "auto", "--no-overlay", "--json")
    assert r.exit_code == 0, r.output
    images = json.loads(r.stdout)["results"]
    assert all(i["diameter"] > 0 for i in images) and any(i["scale"] != 1.0 for i in images)
    from nucleiseg.inference.predictor import REUSE_TOLERANCE, Predictor

    for i in images:  # the factor: the model's training diameter over the estimate (1 within 10 %)
        expected = Predictor.from_file(device="cpu")._scale_of(i["diameter"])
        assert i["scale"] == pytest.approx(expected, rel=REUSE_TOLERANCE)
    r = run("predict", "-o", tmp_path / "bad", "--diameter", "tiny")
    assert r.exit_code == 2 and "'tiny' is neither a number of pixels nor 'auto' or 'none'" in r.output


def test_predict_marker_h_option_reaches_the_watershed(tmp_path):
    """--marker-h overrides only that value of the model's watershed: the written labels equal the
    library's prediction with the same values."""
    import dataclasses

    from nucleiseg.data.images import read_image
    from nucleiseg.inference.predictor import PredictOptions, Predictor

    image_path = sorted((bundled_samples_dir() / "images").iterdir())[0]
    r = run("predict", image_path, "-o", tmp_path / "out", "--marker-h", "1.5", "--no-overlay")
    assert r.exit_code == 0, r.output
    predictor = Predictor.from_file(device="cpu")
    options = PredictOptions(watershed=dataclasses.replace(predictor.watershed, marker_h=1.5))
    expected = predictor.predict(read_image(image_path), options)
    np.testing.assert_array_equal(read_label_image(tmp_path / "out" / f"{image_path.stem}.tif"), expected)


def test_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no such file or folder" in r.output and "Traceback" not in r.output
    (tmp_path / "bad.pt").write_text("x")
    r = CliRunner().invoke(main, ["predict", "-o", str(tmp_path / "o"), "--model", str(tmp_path / "bad.pt")])
    assert r.exit_code != 0 and "bad.pt" in r.output and "Traceback" not in r.output


def test_predict_goes_on_past_a_bad_image(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((bundled_samples_dir() / "images").iterdir())[0]
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "broken.png").write_bytes(good.read_bytes()[:200])
    r = CliRunner().invoke(main, ["predict", str(folder), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "broken: FAILED" in r.output and "1 images labeled" in r.output
    assert (tmp_path / "o" / f"{good.stem}.tif").is_file()
    assert not list((tmp_path / "o").glob("*.tmp*"))


def test_predict_measure_and_png_format(tmp_path):
    import csv as _csv

    folder = tmp_path / "in"
    folder.mkdir()
    src = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("1c681dfa5cf7"))
    (folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    r = run("predict", folder, "-o", out, "--measure", "--pixel-size", 0.5, "--format", "png")
    assert r.exit_code == 0, r.output
    labels = read_label_image(out / f"{src.stem}.png")
    assert labels.dtype == np.uint16 and labels.max() > 0
    with open(out / f"{src.stem}_nuclei.csv") as f:
        rows = list(_csv.DictReader(f))
    assert len(rows) == labels.max()
    first = rows[0]
    assert int(first["area_px"]) == (labels == int(first["label"])).sum()
    assert float(first["area_um2"]) == pytest.approx(int(first["area_px"]) * 0.25)
    with open(out / "summary.csv") as f:
        summary = list(_csv.DictReader(f))
    assert summary[0]["image_id"] == src.stem and int(summary[0]["n_nuclei"]) == labels.max()
    # resumed run: skipped, summary still complete
    r = run("predict", folder, "-o", out, "--measure", "--format", "png", "--skip-existing")
    assert "1 skipped" in r.output
    with open(out / "summary.csv") as f:
        assert int(list(_csv.DictReader(f))[0]["n_nuclei"]) == labels.max()


def test_unexpected_errors_one_line_unless_verbose(tmp_path, monkeypatch):
    import nucleiseg.inference.batch

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(nucleiseg.inference.batch, "predict_files", broken)
    r = CliRunner().invoke(main, ["predict", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "RuntimeError: disk on fire" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["--verbose", "predict", "-o", str(tmp_path / "o")])
    assert isinstance(r.exception, RuntimeError)


def test_quiet_has_no_progress_bar():
    labels = bundled_samples_dir() / "labels"
    r = CliRunner().invoke(main, ["--quiet", "score", str(labels), str(labels)])
    assert r.exit_code == 0 and "image/s" not in r.output and "DSB score 1.0000" in r.output


def test_show_and_score_plot(tmp_path, sample_ids):
    import cv2 as _cv2

    image_id = next(i for i in sample_ids if i.startswith("1c681dfa5cf7"))
    image = bundled_samples_dir() / "images" / f"{image_id}.png"
    truth = bundled_samples_dir() / "labels" / f"{image_id}.tif"
    r = run("show", image, truth, "--truth", truth, "-o", tmp_path / "fig.png")
    assert r.exit_code == 0, r.output
    fig = _cv2.imread(str(tmp_path / "fig.png"))
    assert fig is not None and fig.shape[1] > 2 * fig.shape[0]  # three panels side by side
    r = run("score", bundled_samples_dir() / "labels", bundled_samples_dir() / "labels", "--plot", tmp_path / "s.png")
    assert r.exit_code == 0 and _cv2.imread(str(tmp_path / "s.png")) is not None


def test_cluster_without_the_extra_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the 'cluster' extra were not installed
    monkeypatch.delitem(sys.modules, "nucleiseg.inference.cluster", raising=False)
    r = CliRunner().invoke(main, ["predict", "-o", str(tmp_path / "o"), "--workers", "2"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "pip install 'nucleiseg[cluster]'" in r.output and r.output.count("\n") == 1


@pytest.mark.slow
def test_bench_commands_run_on_the_bundled_samples(tmp_path, sample_labels):
    from nucleiseg.bench.references import unet_weight_map_reference  # noqa: F401  (what the bench times)

    r = run("bench", "weightmap", "--json", tmp_path / "w.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "w.json").read_text())
    assert [row["image_id"] for row in result["rows"]] == sorted(sample_labels)
    assert result["total"]["max_abs_diff"] < 1e-5  # ours equals the per-nucleus reference
    most = max(sample_labels, key=lambda i: len(np.unique(sample_labels[i])))
    assert result["most_nuclei"] == most and f"peak extra memory on {most[:12]}" in r.output
    r = run("bench", "score", "--no-huge", "--json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    cases = json.loads((tmp_path / "s.json").read_text())["cases"]
    assert [c["case"] for c in cases] == ["520x696", "4096x4096 mosaic"]  # the sample with the most nuclei
    assert cases[0]["objects_true"] == len(np.unique(sample_labels[most])) - 1
    assert cases[0]["ours_score"] == pytest.approx(cases[0]["kaggle_score"], abs=1e-12)
    r = run("bench", "predict", "--no-tta", "--device", "cpu", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    shapes = [tuple(row["shape"]) for row in json.loads((tmp_path / "p.json").read_text())["rows"]]
    assert shapes == [(256, 256), (256, 320), (260, 347), (360, 360), (520, 696), (1024, 1024)]
    r = CliRunner().invoke(main, ["bench", "scale", "--big", "8192"])
    assert r.exit_code == 1 and "benchmarks/bench_scale.py --big 8192" in r.output
