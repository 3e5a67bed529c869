"""The napari plugin, headless: the widget in a real napari viewer (napari's make_napari_viewer
fixture) adds a Labels layer equal to predict's labels; the reader opens label TIFFs and
GeoJSON; npe2 validates the manifest. Skipped where the 'napari' extra is absent
(scripts/setup.sh test installs it).

The viewer's canvas needs OpenGL, which Qt's offscreen platform does not give; the viewer tests
run on Qt's xcb platform inside Xvfb (started by pytest-xvfb; Xvfb and the xcb libraries are
installed by scripts/setup.sh test where it may install system packages) and skip, saying so,
where there is no X display.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

#: Libraries Qt's xcb platform plugin loads that minimal systems lack.
XCB_LIBRARIES = ("xcb-icccm", "xcb-keysyms", "xcb-cursor")


def _x_display() -> bool:
    """Whether Qt can open windows with OpenGL here: an X display (Xvfb) and the xcb libraries."""
    return bool(os.environ.get("DISPLAY")) and all(ctypes.util.find_library(n) for n in XCB_LIBRARIES)


needs_display = pytest.mark.skipif(not _x_display(), reason="no X display with Qt's xcb libraries (napari's "
                                   "canvas needs OpenGL); scripts/setup.sh test installs Xvfb and them")
if _x_display():
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

from nucleiseg.data.images import read_image, read_label_image  # noqa: E402
from nucleiseg.data.sources import bundled_samples_dir  # noqa: E402
from nucleiseg.inference.batch import predict_files  # noqa: E402
from nucleiseg.inference.predictor import PredictOptions, load_model  # noqa: E402
from nucleiseg.napari_plugin import get_reader, segment_widget  # noqa: E402


@pytest.fixture(scope="module")
def sample_and_predicted(tmp_path_factory):
    """A bundled sample and predict's label image for it (file job, OME-TIFF + GeoJSON)."""
    path = sorted((bundled_samples_dir() / "images").iterdir())[2]
    out = tmp_path_factory.mktemp("predicted")
    [result] = predict_files([path], out, load_model(device="cpu"), PredictOptions(geojson=True, pixel_size=0.5))
    assert result.status == "done"
    return path, out


@needs_display
def test_widget_adds_the_labels_predict_writes(make_napari_viewer, qtbot, sample_and_predicted):
    path, out = sample_and_predicted
    viewer = make_napari_viewer()
    layer = viewer.add_image(read_image(path)[..., :3], name="sample", rgb=True)
    container = segment_widget(viewer)
    widget = container.segmenter
    assert widget.image.value is layer
    model = load_model(device="cpu")
    assert (widget.marker_threshold.value, widget.mask_threshold.value, widget.min_area.value) == (
        model.watershed.marker_threshold, model.watershed.mask_threshold, model.watershed.min_area)
    assert not widget.min_area.enabled  # the model's values are used until unticked
    worker = widget.run()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=120_000)
    qtbot.waitUntil(lambda: widget.button.enabled, timeout=10_000)
    labels_layer = viewer.layers[1]
    assert isinstance(labels_layer, napari.layers.Labels)
    expected = read_label_image(out / f"{path.stem}.tif")
    np.testing.assert_array_equal(labels_layer.data, expected)
    features = labels_layer.features
    assert len(features) == expected.max()
    np.testing.assert_array_equal(features["index"].to_numpy(), np.arange(1, expected.max() + 1))
    areas = np.bincount(expected.ravel())[1:]
    np.testing.assert_array_equal(features["area_px"].to_numpy(), areas)
    assert "nuclei" in widget.status.value and worker is not None


@needs_display
def test_widget_reports_a_stack_without_crashing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    widget = segment_widget(viewer).segmenter
    assert widget.run() is None
    assert widget.status.value.startswith("failed") and "2-D image" in widget.status.value
    assert widget.button.enabled and len(viewer.layers) == 1


def test_reader_opens_label_tiff_with_scale_and_geojson(sample_and_predicted):
    path, out = sample_and_predicted
    expected = read_label_image(out / f"{path.stem}.tif")
    [(data, meta, kind)] = get_reader(str(out / f"{path.stem}.tif"))(None)
    assert kind == "labels" and meta["scale"] == (0.5, 0.5)
    np.testing.assert_array_equal(data, expected)
    [(data, meta, kind)] = get_reader(str(out / f"{path.stem}.geojson"))(None)
    # the GeoJSON layer covers the polygons' extent; inside it, the labels are predict's
    np.testing.assert_array_equal(data, expected[: data.shape[0], : data.shape[1]])
    assert expected[data.shape[0]:].max(initial=0) == 0 and expected[:, data.shape[1]:].max(initial=0) == 0
    assert len(meta["features"]["index"]) == expected.max()
    # an ordinary image TIFF is left to napari's own reader
    import tifffile

    tifffile.imwrite(out / "plain.tif", np.zeros((8, 8), np.uint16))
    assert get_reader(str(out / "plain.tif")) is None
    (out / "settings.json").write_text('{"type": "Settings", "x": 1}')  # some other JSON
    assert get_reader(str(out / "settings.json")) is None


def test_npe2_validate_passes():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    assert npe2, "npe2 is installed with napari"
    run = subprocess.run([npe2, "validate", "nucleiseg"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout
