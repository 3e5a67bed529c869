"""Kaggle RLE: hand-checked encodings, round trips on real masks, solution CSV reading, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from nucleiseg.data.rle import decode_labels, decode_rle, encode_labels, read_solution_csv, write_submission
from nucleiseg.errors import RLEError


def test_column_major_numbering_by_hand():
    # pixel (r, c) of an H x W image is c*H + r + 1
    labels = np.zeros((3, 4), np.uint16)
    labels[0:2, 1] = 1  # pixels 4, 5
    labels[2, 1] = 2  # pixel 6
    labels[0, 2] = 2  # pixel 7 -> touches pixel 6 in column-major order: one run "6 2"
    labels[:, 3] = 5  # pixels 10..12, label with a gap (no 3, 4)
    assert encode_labels(labels) == ["4 2", "6 2", "10 3"]
    mask = decode_rle("6 2", (3, 4))
    assert mask[2, 1] and mask[0, 2] and mask.sum() == 2


def test_round_trip_on_real_masks(sample_labels):
    for image_id, labels in sample_labels.items():
        rles = encode_labels(labels)
        back = decode_labels(rles, labels.shape)
        # labels are renumbered 1..N in increasing order of the original labels
        ids = np.unique(labels[labels > 0])
        assert len(rles) == len(ids)
        expected = np.zeros_like(labels)
        for k, lab in enumerate(ids, start=1):
            expected[labels == lab] = k
        np.testing.assert_array_equal(back, expected, err_msg=image_id)


def test_round_trip_whole_dsb2018(dsb_root):
    from nucleiseg.data.dsb2018 import list_image_ids, read_item

    for image_id in list_image_ids(dsb_root)[::40]:
        labels = read_item(dsb_root, image_id).labels
        np.testing.assert_array_equal(decode_labels(encode_labels(labels), labels.shape), labels)


def test_solution_csv_reading(tmp_path, sample_labels):
    path = tmp_path / "solution.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "EncodedPixels", "Height", "Width", "Usage"])
        for image_id, labels in sample_labels.items():
            for rle in encode_labels(labels):
                w.writerow([image_id, rle, labels.shape[0], labels.shape[1], "Public"])
    got = read_solution_csv(path)
    assert set(got) == set(sample_labels)
    for image_id, labels in sample_labels.items():
        np.testing.assert_array_equal(got[image_id] > 0, labels > 0)
        assert got[image_id].max() == len(np.unique(labels)) - 1


def test_submission_round_trip_with_shapes(tmp_path, sample_labels):
    path = tmp_path / "sub.csv"
    items = list(sample_labels.items())[:2] + [("empty", np.zeros((5, 6), np.uint16))]
    write_submission(path, items)
    shapes = {i: lab.shape for i, lab in items}
    got = read_solution_csv(path, shapes)
    for image_id, labels in items:
        np.testing.assert_array_equal(got[image_id] > 0, labels > 0)
    with pytest.raises(RLEError, match="size of"):
        read_solution_csv(path)


@pytest.mark.parametrize(
    "rle, message",
    [
        ("1 2 3", "odd number"),
        ("1 x", "not an integer"),
        ("0 2", "start below 1"),
        ("1 0", "length below 1"),
        ("1 -2", "length below 1"),
        ("11 3", "past the"),
        ("5 1 1 1", "unsorted"),
        ("1 3 2 2", "unsorted"),
        ("1 2 3 1", "touching"),
    ],
)
def test_malformed_rle(rle, message):
    with pytest.raises(RLEError, match=message):
        decode_rle(rle, (3, 4), "x.csv, row 2")


def test_csv_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("ImageId,EncodedPixels\nabc\n")
    with pytest.raises(RLEError, match="line 2"):
        read_solution_csv(path, {"abc": (3, 3)})
    path.write_text("Id,Pixels\nabc,1 1\n")
    with pytest.raises(RLEError, match="header"):
        read_solution_csv(path)
