"""Numba EDT against SciPy; d1/d2 and the U-Net weight map against the per-nucleus reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from nucleiseg.targets.distance import edt, two_nearest_distances
from nucleiseg.targets.weightmap import class_balance_weights, unet_weight_map

from nucleiseg.bench.references import two_nearest_reference, unet_weight_map_reference


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (23, 1), (7, 13), (64, 33), (101, 257)])
@pytest.mark.parametrize("sampling", [None, 0.5, (2.0, 0.5), (1.0, 3.7)])
def test_edt_equals_scipy(shape, sampling):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for density in (0.05, 0.5, 0.95):
        image = rng.random(shape) > density
        image.flat[0] = False  # at least one background pixel (see the all-foreground test)
        expected = ndimage.distance_transform_edt(image, sampling=sampling)
        np.testing.assert_allclose(edt(image, sampling), expected, rtol=1e-12, atol=1e-12)


def test_edt_empty_and_full_images():
    np.testing.assert_array_equal(edt(np.zeros((5, 7), np.uint8)), 0.0)
    # no background pixel at all: documented +inf (SciPy measures to a pixel outside the image)
    assert np.isinf(edt(np.ones((5, 7), bool))).all()
    assert edt(np.zeros((0, 4), bool)).shape == (0, 4)


def test_edt_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        edt(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="sampling"):
        edt(np.zeros((2, 2)), sampling=(1.0, -1.0))
    with pytest.raises(ValueError, match="sampling"):
        edt(np.zeros((2, 2)), sampling=(1.0, 2.0, 3.0))


def check_two_nearest(labels, max_distance=30.0):
    d1, d2 = two_nearest_distances(labels, max_distance)
    r1, r2 = two_nearest_reference(labels)
    for ours, ref in ((d1, r1), (d2, r2)):
        near = ref <= max_distance
        np.testing.assert_allclose(ours[near], ref[near], atol=1e-4)
        assert np.isinf(ours[~near]).all()


def test_two_nearest_and_weight_map_on_real_labels(sample_labels):
    for labels in sample_labels.values():
        check_two_nearest(labels)
        np.testing.assert_allclose(unet_weight_map(labels), unet_weight_map_reference(labels), atol=1e-4)


def test_weight_map_on_the_375_nucleus_image(dsb_root):
    from nucleiseg.data.dsb2018 import read_item

    labels = read_item(dsb_root, "a102535b0e88374bea4a1cfd9ee7cb3822ff54f4ab2a9845d428ec22f9ee2288").labels
    assert len(np.unique(labels)) - 1 == 375
    crop = labels[:300, :400]  # the full reference needs 2.3 GB; a crop keeps the test light
    np.testing.assert_allclose(unet_weight_map(crop), unet_weight_map_reference(crop), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 6)))
def test_weight_map_hypothesis(labels):
    check_two_nearest(labels, max_distance=30.0)
    np.testing.assert_allclose(unet_weight_map(labels, w0=10, sigma=5),
                               unet_weight_map_reference(labels, w0=10, sigma=5), atol=1e-4)


def test_fewer_than_two_nuclei():
    labels = np.zeros((20, 20), np.uint16)
    np.testing.assert_array_equal(unet_weight_map(labels, class_weights=(1, 2)), 1.0)
    labels[5:9, 5:9] = 3
    w = unet_weight_map(labels, class_weights=(1.0, 2.0))
    np.testing.assert_array_equal(w, np.where(labels > 0, 2.0, 1.0))


def test_gapped_and_non_contiguous_labels():
    labels = np.zeros((30, 40), np.uint32)
    labels[5:10, 5:10] = 1000  # one nucleus in two pieces
    labels[20:25, 30:35] = 1000
    labels[5:10, 13:18] = 7
    gapped = unet_weight_map(labels)
    np.testing.assert_allclose(gapped, unet_weight_map_reference(labels), atol=1e-4)
    compact = np.where(labels == 1000, 1, np.where(labels == 7, 2, 0)).astype(np.uint8)
    np.testing.assert_allclose(gapped, unet_weight_map(compact), atol=1e-6)
    # gap between the two 3-px apart nuclei: d1 + d2 = 4 at (7, 11) -> w0 * exp(-16 / 50)
    wc_bg = class_balance_weights(labels)[0]
    assert gapped[7, 11] == pytest.approx(wc_bg + 10 * np.exp(-16 / 50), abs=1e-5)


def test_class_weights():
    labels = np.zeros((10, 10), np.uint8)
    labels[:2] = 1  # foreground fraction 0.2
    w_bg, w_fg = class_balance_weights(labels)
    assert (w_bg, w_fg) == pytest.approx((0.5 / 0.8, 0.5 / 0.2))
    w = unet_weight_map(labels)
    assert w.mean() == pytest.approx(1.0, abs=1e-6)  # one nucleus: no border term
    w = unet_weight_map(labels, class_weights=(0.25, 3.0))
    assert set(np.unique(w).tolist()) == {0.25, 3.0}
    with pytest.raises(ValueError, match="class_weights"):
        unet_weight_map(labels, class_weights=(1.0,))


def test_weight_map_bad_input():
    with pytest.raises(ValueError, match="integer"):
        unet_weight_map(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        unet_weight_map(np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match="negative"):
        unet_weight_map(-np.ones((4, 4), np.int16))
    with pytest.raises(ValueError, match="sigma"):
        unet_weight_map(np.zeros((4, 4), np.uint8), sigma=0)
