"""Failure behaviour: bad input gives our exception, batch jobs lose nothing, training can be stopped.

Every bad input tried here names the file (or ImageId) and the problem in a NucleisegError subclass.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.rle import decode_labels, decode_rle, encode_labels, read_solution_csv
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.errors import ImageIdError, ImageReadError, NucleisegError, RLEError
from nucleiseg.inference.predictor import Predictor
from nucleiseg.io import write_label_image
from nucleiseg.metrics import dsb_score, matching_table
from nucleiseg.postprocess import probabilities_to_labels
from nucleiseg.targets.border import softmax_targets

label_images = arrays(np.uint16, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 5))


# ---------------------------------------------------------------- property-based tests


@settings(max_examples=60, deadline=None)
@given(label_images)
def test_rle_round_trip_property(labels):
    back = decode_labels(encode_labels(labels), labels.shape)
    np.testing.assert_array_equal(back > 0, labels > 0)
    for k in np.unique(back[back > 0]):  # each decoded nucleus is exactly one original label
        assert len(np.unique(labels[back == k])) == 1


@settings(max_examples=60, deadline=None)
@given(label_images, label_images, st.randoms(use_true_random=False))
def test_score_properties(a, b, rnd):
    if a.shape != b.shape:
        b = np.resize(b, a.shape)
    assert dsb_score(a, a) == 1.0
    perm = list(range(1, 6))
    rnd.shuffle(perm)
    relabeled = np.where(a > 0, np.array([0] + [p * 100 for p in perm])[a], 0).astype(np.uint32)
    assert dsb_score(relabeled, b) == pytest.approx(dsb_score(a, b))
    for ab, ba in zip(matching_table(a, b), matching_table(b, a)):
        assert ab.tp == ba.tp and ab.fp == ba.fn and ab.fn == ba.fp


@settings(max_examples=40, deadline=None)
@given(label_images, st.integers(1, 3))
def test_targets_partition_property(labels, width):
    np.testing.assert_array_equal(softmax_targets(labels, width).sum(axis=0), 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.float32, st.tuples(st.just(3), st.integers(2, 20), st.integers(2, 20)),
              elements=st.floats(0, 1, width=32)))
def test_watershed_labels_are_1_to_n_property(raw):
    probs = raw / np.maximum(raw.sum(axis=0, keepdims=True), 1e-6)
    labels = probabilities_to_labels(probs)
    present = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(present, np.arange(1, present.size + 1))


# ---------------------------------------------------------------- fuzzing the readers


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000), st.sampled_from([".png", ".tif", ".jpg", ".bmp"]))
def test_fuzz_image_reader(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        read_image(path)
    except NucleisegError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=500))
def test_fuzz_rle_and_csv_readers(tmp_path, data):
    text = data.decode("latin-1")
    try:
        decode_rle(text, (7, 9))
    except NucleisegError:
        pass
    path = tmp_path / "fuzz.csv"
    path.write_bytes(b"ImageId,EncodedPixels,Height,Width\n" + data)
    try:
        read_solution_csv(path)
    except NucleisegError:
        pass


# ---------------------------------------------------------------- one test per bad input


def test_bad_image_files(tmp_path):
    good = next((bundled_samples_dir() / "images").iterdir()).read_bytes()
    cases = {
        "zero.png": (b"", "empty"),
        "truncated.png": (good[: len(good) // 2], "not a readable image"),
        "text.png": (b"hello, not a png", "not a readable image"),
        "text.tif": (b"hello, not a tiff", "not a readable TIFF"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=message) as err:
            read_image(tmp_path / name)
        assert name in str(err.value)


@pytest.mark.parametrize("bad, message", [
    (np.array([[np.nan, 1]], np.float32), "NaN or infinite"),
    (np.array([[np.inf, 1]], np.float32), "NaN or infinite"),
    (np.zeros((4, 4, 5), np.uint8), "1 to 4 channels"),
])
def test_bad_tiff_contents(tmp_path, bad, message):
    tifffile.imwrite(tmp_path / "bad.tif", bad, photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match=message):
        read_image(tmp_path / "bad.tif")


def test_multipage_tiff_reads_first_page(tmp_path):
    pages = np.stack([np.full((4, 5, 3), k, np.uint8) for k in (7, 9)])
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="rgb")
    got = read_image(tmp_path / "pages.tif")
    assert got.shape == (4, 5, 3) and (got == 7).all()


def test_bool_and_label_dtypes(tmp_path):
    tifffile.imwrite(tmp_path / "bool.tif", np.ones((4, 4), bool))
    with pytest.raises(ImageReadError, match="bool.tif: unsupported pixel type bool"):
        read_image(tmp_path / "bool.tif")
    tifffile.imwrite(tmp_path / "neg.tif", -np.ones((4, 4), np.int32))
    with pytest.raises(ImageReadError, match="negative"):
        read_label_image(tmp_path / "neg.tif")
    tifffile.imwrite(tmp_path / "frac.tif", np.full((4, 4), 1.5, np.float32))
    with pytest.raises(ImageReadError, match="non-integer"):
        read_label_image(tmp_path / "frac.tif")
    big = np.zeros((4, 4), np.int64)
    big[0, 0] = 70000  # beyond uint16: written and read back as uint32
    write_label_image(tmp_path / "big.tif", big)
    back = read_label_image(tmp_path / "big.tif")
    assert back.dtype == np.uint32 and back[0, 0] == 70000


@pytest.fixture(scope="module")
def gray_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 128 x 128 uint8 gray crop of a real fluorescence sample (its R, G and B are equal) and the
    bundled model's labels of it."""
    path = next((bundled_samples_dir() / "images").glob("1c681dfa5cf7*.png"))
    gray = read_image(path)[:128, :128, 0].copy()
    return gray, Predictor.from_file(device="cpu").predict(gray)


@pytest.mark.parametrize("channels, dtype", [(0, np.uint8), (1, np.uint16), (2, np.uint8), (3, np.uint16),
                                             (4, np.uint8)])
def test_channels_and_bit_depths_predict(tmp_path, gray_crop, channels, dtype):
    """The same picture stored as 8 or 16 bit, gray, gray + alpha, RGB or RGBA gives the labels of
    the 8-bit gray image (normalisation is percentile-based, alpha is dropped, RGB averaged)."""
    gray, expected = gray_crop
    assert expected.max() > 10  # a real crop with nuclei in it
    value = gray.astype(dtype) * (257 if dtype == np.uint16 else 1)
    alpha = np.full_like(value, np.iinfo(dtype).max)
    planes = {0: [], 1: [value], 2: [value, alpha], 3: [value] * 3, 4: [value] * 3 + [alpha]}[channels]
    image = np.stack(planes, axis=-1) if planes else value
    kwargs = {"photometric": "rgb"} if channels >= 3 else {"photometric": "minisblack"}
    if channels > 1:
        kwargs["planarconfig"] = "contig"
    tifffile.imwrite(tmp_path / "x.tif", image, **kwargs)
    read = read_image(tmp_path / "x.tif")
    assert read.shape == image.shape[:2] + ((channels,) if channels > 1 else ()) and read.dtype == dtype
    np.testing.assert_array_equal(Predictor.from_file(device="cpu").predict(read), expected)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (15, 17)])
def test_tiny_and_constant_images_predict(shape):
    predictor = Predictor.from_file(device="cpu")
    assert predictor.predict(np.full(shape, 100, np.uint8)).max() == 0  # constant: no nuclei
    noise = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    labels = predictor.predict(noise)
    assert labels.shape == shape and labels.dtype == np.int32
    present = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(present, np.arange(1, present.size + 1))  # the 1..N contract
    assert (np.bincount(labels.ravel())[1:] >= predictor.watershed.min_area).all()  # no nucleus under the minimum


@pytest.mark.parametrize("image_id", ["../x", "/abs/path", "a/b", "..", "a\\b"])
def test_image_ids_that_escape_are_refused(tmp_path, image_id):
    path = tmp_path / "sub.csv"
    path.write_text(f'ImageId,EncodedPixels,Height,Width\n"{image_id}",1 1,3,3\n')
    with pytest.raises(ImageIdError, match="not a plain file name"):
        read_solution_csv(path)


def test_rle_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ImageId,EncodedPixels,Height,Width\nimg,1 2 3,3,3\n")
    with pytest.raises(RLEError, match=r"s\.csv, img, nucleus 1: odd number"):
        read_solution_csv(path)
    path.write_text("ImageId,EncodedPixels,Height,Width\nimg,1 1,x,3\n")
    with pytest.raises(RLEError, match="line 2: Height/Width"):
        read_solution_csv(path)
    path.write_text("ImageId,EncodedPixels,Height,Width\nimg,1 3,3,3\nimg,2 1,3,3\n")
    with pytest.raises(RLEError, match="overlaps"):
        read_solution_csv(path)


# ---------------------------------------------------------------- batch jobs and training


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "nucleiseg", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_killed_predict_resumes_with_skip_existing(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):  # 24 images: the 8 samples under three names each
        for p in (bundled_samples_dir() / "images").iterdir():
            if not p.name.startswith("76a372bfd3fa"):  # leave out the slow 1024 x 1024 one
                shutil.copy(p, inputs / f"{k}_{p.name}")
    full = tmp_path / "full"
    ref = _cli("predict", inputs, "-o", full, "--rle", tmp_path / "full.csv")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    out = tmp_path / "out"
    proc = _cli("predict", inputs, "-o", out, "--rle", tmp_path / "out.csv")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*_overlay.png"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = sorted(p.name for p in out.glob("*.tif"))
    assert 0 < len(finished) < 21
    complete = [n for n in finished if (out / f"{n[:-4]}_overlay.png").is_file()]  # what a rerun skips
    assert not (tmp_path / "out.csv").exists()  # the CSV only appears complete
    for name in finished:  # every visible output is complete
        np.testing.assert_array_equal(read_label_image(out / name), read_label_image(full / name))

    again = _cli("predict", inputs, "-o", out, "--rle", tmp_path / "out.csv", "--skip-existing")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert f"{len(complete)} skipped (already done)" in stdout
    assert f"{21 - len(complete)} images labeled" in stdout
    assert sorted(p.name for p in out.glob("*.tif")) == sorted(p.name for p in full.glob("*.tif"))
    for p in full.glob("*.tif"):
        np.testing.assert_array_equal(read_label_image(out / p.name), read_label_image(p))
    assert (tmp_path / "out.csv").read_text() == (tmp_path / "full.csv").read_text()
    leftovers = [p for p in out.iterdir() if p.name.startswith(".")]
    assert all(".tmp" in p.name for p in leftovers)  # only hidden temporaries, never a fake output


@pytest.fixture()
def tiny_training(tmp_path, small_dsb):
    return ["train", small_dsb, "--features", "4,8", "--crop-size", 32, "--batch-size", 2, "--device", "cpu"]


@pytest.mark.slow
def test_sigterm_saves_resumable_state(tmp_path, tiny_training):
    out = tmp_path / "m.pt"
    proc = _cli(*tiny_training, "--out", out, "--steps", 100000, "--val-every", 1)
    resume = tmp_path / "m.pt.resume.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not resume.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "stopped by SIGTERM" in stderr and "--resume" in stderr
    state = torch.load(resume, weights_only=True)
    assert state["step"] >= 1
    proc = _cli(*tiny_training, "--out", out, "--steps", state["step"] + 2, "--val-every", 1, "--resume")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"resumed from {resume} at step {state['step']}" in stderr
    assert torch.load(resume, weights_only=True)["step"] == state["step"] + 2


def test_seed_makes_cpu_training_reproducible(tmp_path, small_dsb):
    from nucleiseg.training.config import TrainConfig
    from nucleiseg.training.loop import train

    states = []
    for run in ("a", "b"):
        cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=3, val_every=3, seed=7)
        train(small_dsb, tmp_path / f"{run}.pt", cfg, torch.device("cpu"))
        states.append(torch.load(tmp_path / f"{run}.pt.resume.pt", weights_only=True)["model"])
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0)


def test_non_finite_loss_names_the_images(tmp_path, small_dsb):
    from nucleiseg.targets.convert import convert_collection
    from nucleiseg.training.config import TrainConfig
    from nucleiseg.training.loop import train

    data = tmp_path / "conv"
    convert_collection(small_dsb, data)
    for path in (data / "train").glob("*.npz"):  # poison every image with NaN
        with np.load(path) as z:
            arrays = dict(z)
        arrays["image"] = np.full(arrays["image"].shape[:2], np.nan, np.float32)
        np.savez(path, **arrays)
    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=3, val_every=3)
    with pytest.raises(NucleisegError, match="non-finite loss at step 0 on images .*[0-9a-f]{64}"):
        train(data, tmp_path / "m.pt", cfg, torch.device("cpu"))


def test_channel_selection(tmp_path):
    pages = np.stack([np.full((4, 5), k, np.uint16) for k in (3, 8, 9)])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")  # three pages
    tifffile.imwrite(tmp_path / "planar.tif", pages, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "planar.tif").shape == (4, 5, 3)
    assert (read_image(tmp_path / "planar.tif", channel=1) == 8).all()
    assert (read_image(tmp_path / "stack.tif") == 3).all()
    assert (read_image(tmp_path / "stack.tif", channel=2) == 9).all()
    with pytest.raises(ImageReadError, match="no page 3"):
        read_image(tmp_path / "stack.tif", channel=3)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 7
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    assert (read_image(tmp_path / "rgb.png", channel=1) == 7).all()
    with pytest.raises(ImageReadError, match="no channel 5"):
        read_image(tmp_path / "rgb.png", channel=5)


def test_png_labels_beyond_16_bit_are_refused_with_our_error(tmp_path):
    from nucleiseg.io import write_label_png

    labels = np.zeros((3, 3), np.uint32)
    labels[0, 0] = 70000
    with pytest.raises(NucleisegError, match="big.png: labels above 65535"):
        write_label_png(tmp_path / "big.png", labels)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd"])
def test_compressed_tiff_reads_back_equal(tmp_path, compression):
    rng = np.random.default_rng(2)
    for image in (rng.integers(0, 65535, (37, 53), dtype=np.uint16), rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)):
        path = tmp_path / f"{compression}_{image.ndim}.tif"
        tifffile.imwrite(path, image, compression=compression, photometric="rgb" if image.ndim == 3 else "minisblack")
        assert tifffile.TiffFile(path).pages[0].compression.name.lower().startswith(compression[:3])
        np.testing.assert_array_equal(read_image(path), image)
    labels = rng.integers(0, 70000, (20, 30)).astype(np.uint32)
    tifffile.imwrite(tmp_path / "labels.tif", labels, compression=compression)
    np.testing.assert_array_equal(read_label_image(tmp_path / "labels.tif"), labels)


def test_jpeg_multipage_and_ome_tiff(tmp_path):
    yy, xx = np.mgrid[:64, :80]
    smooth = np.stack([(yy * 2 + xx).astype(np.uint8), (yy * 3).astype(np.uint8), (xx * 3).astype(np.uint8)], -1)
    tifffile.imwrite(tmp_path / "jpeg.tif", smooth, compression="jpeg", photometric="rgb")
    assert np.abs(read_image(tmp_path / "jpeg.tif").astype(int) - smooth).mean() < 2.0  # lossy, but close
    stack = np.stack([smooth[..., k] for k in range(3)])  # (C, Y, X) as three pages
    tifffile.imwrite(tmp_path / "x.ome.tif", stack, ome=True, metadata={"axes": "CYX"}, compression="deflate")
    assert tifffile.TiffFile(tmp_path / "x.ome.tif").is_ome
    np.testing.assert_array_equal(read_image(tmp_path / "x.ome.tif"), stack[0])
    np.testing.assert_array_equal(read_image(tmp_path / "x.ome.tif", channel=2), stack[2])
