"""Crops and dihedral transforms keep the image, classes and pixel weights aligned."""

from __future__ import annotations

import numpy as np

from nucleiseg.training.augment import random_crop, sample_batch
from nucleiseg.transforms import dihedral, dihedral_inverse


def test_dihedral_round_trip_and_distinct():
    a = np.arange(12).reshape(3, 4)
    outs = [dihedral(a, k) for k in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
    for k in range(8):
        np.testing.assert_array_equal(dihedral_inverse(dihedral(a, k), k), a)


def test_random_crop_keeps_arrays_aligned():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (50, 70)).astype(np.uint8)
    image = classes.astype(np.float32)
    for _ in range(20):
        img, cls = random_crop([image, classes], 32, rng, scale_range=(1.0, 1.0))
        assert img.shape == cls.shape == (32, 32)
        np.testing.assert_array_equal(img, cls)
    small = random_crop([image[:10, :12], classes[:10, :12]], 32, rng)  # padded up to the window
    assert small[0].shape == (32, 32)


def test_sample_batch_with_pixel_weights():
    rng = np.random.default_rng(1)
    classes = [rng.integers(0, 3, (40, 40)).astype(np.uint8) for _ in range(3)]
    images = [np.full((40, 40), 0.5, np.float32) for _ in range(3)]
    weights = [np.full((40, 40), 2.0 + i, np.float32) for i in range(3)]
    xs, ys, ws, idx = sample_batch(images, classes, np.ones(3) / 3, 6, 16, rng, weights)
    assert xs.shape == (6, 1, 16, 16) and ys.shape == ws.shape == (6, 16, 16)
    for b, i in enumerate(idx):
        np.testing.assert_allclose(ws[b], 2.0 + i)
    assert sample_batch(images, classes, np.ones(3) / 3, 2, 16, rng)[2] is None


def test_shift_intensity_varies_channels_apart():
    from nucleiseg.training.augment import _jpeg, shift_intensity

    yy, xx = np.mgrid[:64, :64]
    same = np.stack([(yy + xx) / 126.0] * 2).astype(np.float32)  # two equal channels
    rng = np.random.default_rng(4)
    outs = [shift_intensity(same, rng) for _ in range(20)]
    assert all(o.shape == same.shape and o.dtype == np.float32 and 0 <= o.min() and o.max() <= 1 for o in outs)
    assert all(not np.allclose(o[0], o[1]) for o in outs)  # stain channels jittered apart
    dims = [o.mean() / max(same.mean(), 1e-6) for o in outs]
    assert min(dims) < 0.7  # some crops come out dim
    jpeg = _jpeg(same[0], 30)
    assert np.abs(jpeg - same[0]).max() > 0 and np.abs(jpeg - same[0]).mean() < 0.02  # lossy, but close


def test_scaled_crops_keep_labels_on_their_image():
    """A crop resized by the scale augmentation keeps its class map on the image: for a disk, the
    centroid of the resized class pixels and of the resized image agree within 0.1 px at every
    scale (OpenCV's INTER_NEAREST put them up to half a pixel apart)."""
    import cv2

    from nucleiseg.transforms import resize_labels

    yy, xx = np.mgrid[:300, :300]
    disk = ((yy - 150.3) ** 2 + (xx - 149.6) ** 2 < 60**2)
    image, classes = disk.astype(np.float32), np.where(disk, 0, 2).astype(np.uint8)
    for size in (90, 121, 170, 211, 420, 555):
        img = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) > 0.5
        lab = resize_labels(classes, (size, size)) == 0
        for axis in (0, 1):
            centre_img = np.nonzero(img)[axis].mean()
            centre_lab = np.nonzero(lab)[axis].mean()
            assert abs(centre_img - centre_lab) < 0.1, (size, axis, centre_img, centre_lab)


def test_dim_nuclei_scales_each_nucleus_towards_the_background():
    from nucleiseg.training.augment import dim_nuclei

    labels = np.zeros((40, 40), np.int64)
    labels[5:15, 5:15], labels[20:35, 20:30] = 1, 2
    image = np.where(labels > 0, 1.0, 0.2).astype(np.float32)[None].repeat(2, 0)
    image[1] *= 0.5  # a second channel with its own background (0.1) and nuclei (0.5)
    out = dim_nuclei(image, labels, 0.6, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, labels == 0], image[:, labels == 0])
    for channel, (b, x) in enumerate([(0.2, 1.0), (0.1, 0.5)]):
        f = [(out[channel, labels == n] - b) / (x - b) for n in (1, 2)]
        for values in f:  # one factor per nucleus, inside [0.4, 1]
            assert np.ptp(values) < 1e-6 and 0.4 - 1e-6 <= values[0] <= 1.0
        assert abs(f[0][0] - f[1][0]) > 1e-3  # drawn apart
    np.testing.assert_array_equal(dim_nuclei(image, labels * 0, 0.6, np.random.default_rng(1)), image)


def test_sample_batch_dims_nuclei_of_half_the_crops():
    from nucleiseg.training.augment import sample_batch

    labels = np.zeros((64, 64), np.uint16)
    for n, r in enumerate(range(4, 60, 14), start=1):
        labels[r : r + 10, 10:50] = n
    image = np.where(labels > 0, 1.0, 0.0).astype(np.float32)
    classes = np.where(labels > 0, 0, 2).astype(np.uint8)
    xs, ys, _, _ = sample_batch([image], [classes], np.ones(1), 40, 64, np.random.default_rng(0), augment="none",
                                labels=[labels], nucleus_dimming=0.5)
    dimmed = [(x[0][y == 0] < 0.999).any() for x, y in zip(xs, ys)]
    assert 10 < sum(dimmed) < 30  # about half
    assert all(x[0][y == 2].max() == 0 for x, y in zip(xs, ys))  # background untouched


def test_resize_labels_keeps_dtype_and_label_values():
    from nucleiseg.transforms import resize_labels

    labels = np.zeros((40, 40), np.int32)
    labels[:20, :20], labels[20:, 20:] = 70000, 3  # beyond uint16
    out = resize_labels(labels, (20, 20))
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 3, 70000}
    np.testing.assert_array_equal(out, labels[::2, ::2])
