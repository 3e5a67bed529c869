"""Targets on synthetic touching disks, and the watershed splitting them again."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import disk
from nucleiseg.postprocess import WatershedParams, clean_labels, probabilities_to_labels
from nucleiseg.targets.border import class_map, contact_border, sigmoid_targets, softmax_targets


@pytest.fixture()
def touching_and_isolated():
    """Two disks of radius 10 touching at one column, plus an isolated disk far away."""
    shape = (60, 90)
    labels = np.zeros(shape, np.uint16)
    left = disk(shape, (20, 20), 10)
    right = disk(shape, (20, 40), 10) & ~left
    labels[left] = 4
    labels[right] = 9  # gapped labels on purpose
    labels[disk(shape, (45, 75), 8)] = 2
    return labels


def naive_border(labels: np.ndarray, width: int) -> np.ndarray:
    """Reference: per pixel, the set of distinct labels within a Euclidean disk of radius width."""
    h, w = labels.shape
    out = np.zeros(labels.shape, bool)
    for r in range(h):
        for c in range(w):
            r0, r1, c0, c1 = max(0, r - width), min(h, r + width + 1), max(0, c - width), min(w, c + width + 1)
            yy, xx = np.mgrid[r0:r1, c0:c1]
            near = (yy - r) ** 2 + (xx - c) ** 2 <= width * width
            ids = set(np.unique(labels[r0:r1, c0:c1][near]).tolist()) - {0}
            out[r, c] = len(ids) >= 2
    return out


@pytest.mark.parametrize("width", [1, 2, 3])
def test_border_matches_naive_reference(touching_and_isolated, width):
    np.testing.assert_array_equal(contact_border(touching_and_isolated, width), naive_border(touching_and_isolated, width))


def test_border_only_where_nuclei_touch(touching_and_isolated):
    labels = touching_and_isolated
    border = contact_border(labels, 2)
    assert border.any()
    # nothing near the isolated disk
    assert not border[30:, 60:].any()
    # every border pixel is within 2 px of both touching disks
    d_left = ndimage.distance_transform_edt(labels != 4)
    d_right = ndimage.distance_transform_edt(labels != 9)
    assert (d_left[border] <= 2).all() and (d_right[border] <= 2).all()
    # the contact column itself (x = 30, near row 20) is border
    assert border[20, 29] and border[20, 30]


def test_three_channel_target_partitions_pixels(touching_and_isolated):
    t = softmax_targets(touching_and_isolated, 2)
    assert t.shape == (3,) + touching_and_isolated.shape and t.dtype == np.uint8
    np.testing.assert_array_equal(t.sum(axis=0), 1)
    cls = class_map(touching_and_isolated, 2)
    np.testing.assert_array_equal(np.argmax(t, axis=0), cls)
    # an isolated nucleus is entirely channel 0
    assert (t[0][touching_and_isolated == 2] == 1).all()


def test_sigmoid_targets(touching_and_isolated):
    labels = touching_and_isolated
    inner, border = sigmoid_targets(labels, 2)
    full, border2 = sigmoid_targets(labels, 2, full_mask=True)
    np.testing.assert_array_equal(full, labels > 0)
    np.testing.assert_array_equal(border, border2)
    np.testing.assert_array_equal(inner, (labels > 0) & ~border.astype(bool))


def test_targets_reject_bad_labels():
    with pytest.raises(ValueError, match="2-D"):
        contact_border(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        contact_border(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=">= 1"):
        contact_border(np.zeros((4, 4), np.uint8), 0)


def test_watershed_splits_two_touching_disks(touching_and_isolated):
    labels = touching_and_isolated
    # probabilities a perfect network would give: smoothed one-hot targets
    t = softmax_targets(labels, 2).astype(np.float32)
    probs = np.stack([ndimage.gaussian_filter(c, 1.0) for c in t])
    probs /= probs.sum(axis=0, keepdims=True)
    out = probabilities_to_labels(probs, WatershedParams(0.6, 0.5, 10))
    assert out.max() == 3
    for true_label in (4, 9, 2):
        ids, counts = np.unique(out[labels == true_label], return_counts=True)
        main = ids[np.argmax(counts)]
        assert main != 0
        inter = ((out == main) & (labels == true_label)).sum()
        assert inter / ((out == main) | (labels == true_label)).sum() > 0.8


def test_watershed_output_is_sequential_and_drops_small():
    probs = np.zeros((3, 30, 30), np.float32)
    probs[2] = 1
    for (r, c, s) in [(2, 2, 8), (15, 15, 2)]:  # a 64-px and a 4-px object
        probs[:, r : r + s, c : c + s] = np.array([1.0, 0, 0])[:, None, None]
    out = probabilities_to_labels(probs, WatershedParams(0.5, 0.5, min_area=10))
    assert out.max() == 1 and (out == 1).sum() == 64
    assert probabilities_to_labels(np.zeros((3, 5, 5))).max() == 0
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        probabilities_to_labels(np.zeros((2, 5, 5)))


def test_clean_labels_fills_holes_and_renumbers():
    labels = np.zeros((10, 10), np.int32)
    labels[1:6, 1:6] = 7
    labels[3, 3] = 0  # a hole
    labels[8, 8] = 9
    out = clean_labels(labels, min_area=2)
    assert out[3, 3] == 1 and out.max() == 1


@pytest.mark.parametrize("seed", range(3))
def test_clean_labels_equals_filling_each_object_then_renumbering(seed):
    """clean_labels against the rule written out: each object, in label order, gets the holes
    scipy's binary_fill_holes finds in it (pixels of other objects kept), objects under the
    minimum area dropped, labels renumbered 1..N in their order. Random label fields full of
    holes, rings around other objects, label values with gaps."""
    rng = np.random.default_rng(seed)
    labels = (rng.integers(0, 40, (60, 70)) * 3) * (ndimage.gaussian_filter(rng.random((60, 70)), 1) > 0.45)
    labels[20:40, 20:40] = 7
    labels[25:35, 25:35] = 0  # a ring's hole, holding another object and background
    labels[28:31, 28:31] = 200
    for min_area in (0, 3, 12):
        reference = labels.astype(np.int32)
        for lab in range(1, reference.max() + 1):
            obj = reference == lab
            if obj.any():
                reference[ndimage.binary_fill_holes(obj) & ~obj & (reference == 0)] = lab
        areas = np.bincount(reference.ravel())
        reference[(areas < min_area)[reference] & (reference > 0)] = 0
        kept = np.unique(reference[reference > 0])
        renumber = np.zeros(reference.max() + 1, np.int32)
        renumber[kept] = np.arange(1, kept.size + 1)
        out = clean_labels(labels, min_area)
        assert out.dtype == np.int32 and (out[26, 26] == out[20, 20] or min_area > 300)
        np.testing.assert_array_equal(out, renumber[reference])


def test_marker_h_splits_touching_disks_the_border_missed(touching_and_isolated):
    """A network that sees no border between two touching disks: one marker component. Distance-
    transform h-maxima markers (marker_h > 0) split it back into the two disks (IoU > 0.8 each);
    the isolated disk, whose distance maximum (8 px) is below a large h, keeps a marker of its own."""
    labels = touching_and_isolated
    foreground = (labels > 0).astype(np.float32)
    probs = np.stack([foreground, np.zeros_like(foreground), 1 - foreground])
    assert probabilities_to_labels(probs, WatershedParams(0.5, 0.5, 0)).max() == 2  # merged
    for h in (1.0, 2.0):
        out = probabilities_to_labels(probs, WatershedParams(0.5, 0.5, 0, marker_h=h))
        assert out.max() == 3
        for true_label in (4, 9, 2):
            ids, counts = np.unique(out[labels == true_label], return_counts=True)
            main = ids[np.argmax(counts)]
            iou = ((out == main) & (labels == true_label)).sum() / ((out == main) | (labels == true_label)).sum()
            assert main != 0 and iou > 0.8
    big_h = probabilities_to_labels(probs, WatershedParams(0.5, 0.5, 0, marker_h=50.0))
    assert big_h.max() == 2 and (big_h[labels == 2] > 0).all()  # no component lost


def test_watershed_params_round_trip_and_old_files():
    p = WatershedParams(0.7, 0.4, 30, marker_h=2.0)
    assert WatershedParams.from_dict(p.to_dict()) == p
    old = {"marker_threshold": 0.8, "mask_threshold": 0.6, "min_area": 41}  # written before marker_h
    assert WatershedParams.from_dict(old) == WatershedParams(0.8, 0.6, 41, 0.0)
    assert WatershedParams.from_dict(old).to_dict() == old
    with pytest.raises(ValueError, match="marker_h"):
        WatershedParams(marker_h=-1)


@pytest.mark.parametrize("seed", range(4))
def test_watershed_per_mask_component_equals_skimage_on_the_whole_image(seed):
    """The watershed run component by component of the mask (what probabilities_to_labels does)
    labels every pixel as scikit-image's watershed on the whole image where no two pixels tie:
    random blobs, several markers in one component, components without a marker, markers on the
    image's edges, single pixels touching the blobs only diagonally (separate 4-connected
    components). With ties (plateaus) the whole-image watershed's order among the markers depends
    on the rest of the image; per component it does not: a component's labels are the same
    whatever else the image holds."""
    from skimage.segmentation import watershed

    from nucleiseg.postprocess import _flood

    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random((120, 150)), 3) + rng.random((120, 150)) * 1e-6  # no ties
    mask = ndimage.gaussian_filter(rng.random((120, 150)), 2) > 0.5
    mask[::7, ::9] = True
    seeds = (rng.random((120, 150)) > 0.97) & mask
    seeds[0, :] = mask[0, :]
    markers, n = ndimage.label(seeds)
    assert n > 10 and ndimage.label(mask)[1] > n // 4
    np.testing.assert_array_equal(_flood(image, markers, mask), watershed(image, markers, mask=mask))

    plateaus = np.round(image * 40) / 4
    alone = _flood(plateaus, markers, mask)
    wider = np.zeros((120, 301), plateaus.dtype), np.zeros((120, 301), markers.dtype), np.zeros((120, 301), bool)
    for array, part in zip(wider, (plateaus, markers, mask)):
        array[:, :150], array[:, 151:] = part, part[:, ::-1]  # a second, mirrored field beside it
    wider[1][:, 151:][wider[1][:, 151:] > 0] += n
    np.testing.assert_array_equal(_flood(*wider)[:, :150], alone)
