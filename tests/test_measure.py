"""Per-nucleus measurements against hand-computed values; colour overlays."""

from __future__ import annotations

import numpy as np
import pytest

from nucleiseg.measure import measure_nuclei
from nucleiseg.overlay import colour_overlay, label_colours


def test_measurements_by_hand():
    labels = np.zeros((10, 10), np.uint16)
    labels[2:5, 2:6] = 3  # 3 x 4 rectangle
    labels[7:9, 7:9] = 9  # 2 x 2 square
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)  # value = 10 * row + col
    t = measure_nuclei(labels, image, pixel_size=0.5)
    assert t["label"].tolist() == [3, 9]
    assert t["area_px"].tolist() == [12, 4]
    assert t["area_um2"].tolist() == [3.0, 1.0]
    assert t["centroid_row"].tolist() == [3.0, 7.5] and t["centroid_col"].tolist() == [3.5, 7.5]
    assert [t[k][0] for k in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")] == [2, 2, 5, 6]
    assert t["equivalent_diameter_px"][0] == pytest.approx(np.sqrt(4 * 12 / np.pi))
    assert t["mean_intensity"].tolist() == [33.5, 82.5]
    assert t["solidity"].tolist() == [1.0, 1.0] and t["eccentricity"][1] == 0.0
    assert np.isnan(measure_nuclei(labels, image)["area_um2"]).all()
    with pytest.raises(ValueError, match="pixel_size"):
        measure_nuclei(labels, image, pixel_size=0)


def test_colour_overlay():
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 5
    labels[10:16, 10:16] = 1000
    image = np.zeros((20, 20), np.uint8)
    rgb = colour_overlay(image, labels)
    assert rgb.shape == (20, 20, 3) and rgb.dtype == np.uint8
    colours = label_colours(2)
    assert (rgb[2, 2] == colours[1]).all() and (rgb[10, 10] == colours[2]).all()  # outlines in full colour
    assert (rgb[0, 0] == 0).all()  # background untouched
    assert not (colours[1] == colours[2]).all()
