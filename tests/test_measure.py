"""Per-nucleus measurements against hand-computed values; colour overlays."""

from __future__ import annotations

import numpy as np
import pytest

from nucleiseg.measure import COLUMNS, measure_nuclei
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


def _regionprops(labels, gray):
    from skimage.measure import regionprops_table

    t = regionprops_table(labels, intensity_image=gray, properties=(
        "label", "area", "centroid", "bbox", "equivalent_diameter_area", "eccentricity", "solidity", "intensity_mean"))
    return {"label": t["label"], "area_px": t["area"], "centroid_row": t["centroid-0"], "centroid_col": t["centroid-1"],
            "bbox_min_row": t["bbox-0"], "bbox_min_col": t["bbox-1"], "bbox_max_row": t["bbox-2"],
            "bbox_max_col": t["bbox-3"], "equivalent_diameter_px": t["equivalent_diameter_area"],
            "eccentricity": t["eccentricity"], "solidity": t["solidity"], "mean_intensity": t["intensity_mean"]}


def _awkward_labels() -> np.ndarray:
    """Shapes regionprops must agree on: a single pixel, a line, a diagonal, a ring with a hole,
    a nucleus in two pieces, a concave L, label gaps, and nuclei touching the image's edges."""
    labels = np.zeros((40, 50), np.int32)
    labels[1, 1] = 2
    labels[5, 3:15] = 4
    labels[np.arange(20, 30), np.arange(1, 11)] = 5
    yy, xx = np.mgrid[:40, :50]
    r2 = (yy - 12) ** 2 + (xx - 30) ** 2
    labels[(r2 < 36) & (r2 >= 4)] = 7
    labels[30:33, 20:24] = 9
    labels[35:38, 30:35] = 9
    labels[20:30, 40:43] = 11
    labels[27:30, 40:49] = 11
    labels[0:4, 45:50] = 12
    labels[36:40, 0:3] = 13
    return labels


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint32, np.int64])
def test_measurements_equal_regionprops(dtype, sample_labels, monkeypatch):
    """Every column equals scikit-image's regionprops_table (the definitions it documents) on
    hand-made awkward shapes and on the bundled samples' true labels, with a gray and an RGBA
    image, and when the sums run over bands of a few rows."""
    import nucleiseg.measure as measure

    rng = np.random.default_rng(1)
    cases = [_awkward_labels()] + [np.asarray(v) for v in sample_labels.values()][:3]
    for band in (1 << 22, 37):
        monkeypatch.setattr(measure, "_BAND_PIXELS", band)
        for labels in cases:
            labels = labels.astype(dtype)
            rgba = rng.integers(0, 256, labels.shape + (4,), dtype=np.uint8)
            for image in (rgba, rgba[..., 0].astype(np.float32) / 7):
                gray = image[..., :3].astype(np.float32).mean(-1) if image.ndim == 3 else image
                ours, ref = measure_nuclei(labels, image), _regionprops(labels.astype(np.int32), gray)
                for column, expected in ref.items():
                    np.testing.assert_allclose(ours[column], expected, rtol=1e-6, atol=1e-9, err_msg=column)
                assert ours["label"].dtype == ours["area_px"].dtype == ours["bbox_max_col"].dtype == np.int64


def test_bad_label_images_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        measure_nuclei(np.full((4, 4), -1, np.int32), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="integers"):
        measure_nuclei(np.zeros((4, 4), np.float32), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        measure_nuclei(np.zeros((4, 4), np.int32), np.zeros((4, 5)))
    empty = measure_nuclei(np.zeros((4, 4), np.int32), np.zeros((4, 4)))
    assert all(len(v) == 0 for v in empty.values()) and set(empty) == set(COLUMNS)


def test_hull_pixel_count_equals_grid_points_in_poly():
    """Pixel centres inside or on a convex polygon of half-pixel vertices, counted in integer
    arithmetic, equal skimage's grid_points_in_poly count (vertices, edges and outside the grid
    included), and vertices off the half-pixel grid are refused."""
    from scipy.spatial import ConvexHull
    from skimage.measure import grid_points_in_poly

    from nucleiseg.outlines import hull_pixel_count

    rng = np.random.default_rng(0)
    for _ in range(300):
        points = rng.integers(-6, 30, size=(int(rng.integers(3, 12)), 2)) / 2.0
        if np.linalg.matrix_rank(points[1:] - points[0]) < 2:
            continue
        hull = points[ConvexHull(points).vertices]
        shape = tuple(int(v) for v in rng.integers(1, 16, size=2))
        expected = int(np.count_nonzero(grid_points_in_poly(shape, hull, binarize=False)))
        assert hull_pixel_count(hull, shape) == expected, (hull.tolist(), shape)
    assert hull_pixel_count(np.array([[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0]]), (5, 5)) == 9
    with pytest.raises(ValueError, match="multiples of 1/2"):
        hull_pixel_count(np.array([[0.0, 0.0], [0.0, 1.3], [2.0, 0.0]]), (4, 4))


def test_convex_pixel_counts_equal_convex_hull_image():
    """The hull of each label's outline corners counts what skimage's convex_hull_image
    counts, for nuclei with holes, in two pieces, one pixel, one row, on the image's edges."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    from nucleiseg.outlines import convex_pixel_counts, label_rings

    labels = np.zeros((20, 24), np.int32)
    labels[0:7, 0:9] = 1
    labels[2:4, 3:5] = 0  # a hole
    labels[9, 2] = 2  # one pixel
    labels[12, 0:24] = 3  # one row across the image
    labels[15:18, 3:6] = 4  # two pieces
    labels[18:20, 10:12] = 4
    labels[1:8, 14:24] = 5
    labels[4:8, 18:24] = 0  # an L
    labels[14, 20], labels[15, 21], labels[16, 22] = 6, 6, 6  # a diagonal: three pieces
    boxes = ndimage.find_objects(labels)
    counts = convex_pixel_counts(label_rings(labels, boxes))
    expected = [int(convex_hull_image(labels[box] == k).sum()) for k, box in enumerate(boxes, start=1)]
    assert counts.tolist() == expected
