"""Overlap-tile prediction and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nucleiseg.data.images import read_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.inference.blockwise import nuclei_cut_at_borders
from nucleiseg.inference.predictor import PredictOptions, Predictor, scaled_watershed
from nucleiseg.inference.tiling import blend_window, tile_layout, tile_starts
from nucleiseg.metrics import dsb_score
from nucleiseg.model.config import ModelConfig, UNetConfig
from nucleiseg.model.unet import UNet
from nucleiseg.postprocess import WatershedParams


class Pointwise(nn.Module):
    """A 1x1 convolution: no spatial context, so tiling and flips cannot change its output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("length, tile, stride", [(10, 16, 8), (100, 32, 24), (97, 32, 16), (64, 64, 48)])
def test_tile_starts_cover(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[-1] + min(tile, length) == length
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length", [1025, 1040, 1388, 1984, 2000, 2304, 5008])
def test_tile_layout_fewest_smallest_tiles(length):
    size, starts = tile_layout(length, 1024, 64, 16)
    n = len(starts)
    assert n == -(-(length - 64) // (1024 - 64))  # the fewest tiles of <= 1024 px overlapping by >= 64
    assert size <= 1024 and size % 16 == 0 and all(s % 16 == 0 for s in starts[:-1])
    assert starts[-1] % 16 == 0 or length % 16
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + size == length
    assert all(a + size - b >= 64 for a, b in zip(starts, starts[1:]))  # overlaps of at least 64 px
    assert n * (size - 16) < length + (n - 1) * 64  # 16 px smaller would not cover
    assert tile_layout(1040, 1024, 64, 16) == (560, [0, 480])
    assert tile_layout(700, 1024, 64, 16) == (700, [0])


def test_blend_window():
    r = blend_window((40, 64), 16)
    assert r.shape == (40, 64) and r.min() > 0 and r[16:24, 16:48].min() == 1.0
    np.testing.assert_allclose(r, r[::-1, ::-1])

    w = blend_window(64, 16)
    assert w.shape == (64, 64) and w.min() > 0 and w[16:48, 16:48].min() == 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])


def test_tiled_equals_whole_for_pointwise_model():
    rng = np.random.default_rng(0)
    x = rng.random((150, 97)).astype(np.float32)
    whole = Predictor(Pointwise(), ModelConfig(), torch.device("cpu"), tile_size=1024)
    tiled = Predictor(Pointwise(), ModelConfig(), torch.device("cpu"), tile_size=48, overlap=16, batch_size=3)
    ref = whole.probabilities_of_normalized(x)
    np.testing.assert_allclose(tiled.probabilities_of_normalized(x), ref, atol=1e-5)
    np.testing.assert_allclose(whole.probabilities_of_normalized(x, tta=True), ref, atol=1e-5)
    np.testing.assert_allclose(ref.sum(axis=0), 1.0, atol=1e-5)


def test_tiling_does_not_show_with_bundled_model():
    path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("4596961c789d"))
    image = read_image(path)  # 520 x 696, 133 nuclei
    original_scale = PredictOptions(diameter=None)  # tiles alone: no estimate from the central tile
    whole = Predictor.from_file(device="cpu").predict(image, original_scale)
    tiled = Predictor.from_file(device="cpu", tile_size=256, overlap=64).predict(image, original_scale)
    assert dsb_score(whole, tiled) > 0.98
    # no nucleus lost or split where tiles meet: each whole-image nucleus on a tile seam is one
    # tiled nucleus covering >= 90% of it
    rows, cols = ([0] + sorted({e for s in starts for e in (s, s + size)} - {0, n}) + [n]
                  for n in (528, 704) for size, starts in [tile_layout(n, 256, 64, 16)])  # both ends of every overlap
    rows, cols = [min(e, 520) for e in rows], [min(e, 696) for e in cols]  # the padded image's seams
    crossing, cut = nuclei_cut_at_borders(whole, tiled, rows, cols)
    assert crossing > 20 and cut == 0


def test_device_defaults_and_a_diameter_estimate_that_ignores_the_tile_size():
    """On the CPU tiles are at most 768 px, one per network call (CUDA: 1024, four); the diameter
    estimate reads its central 1024 px in tiles of 1024 whatever the tile size, so on the bundled
    1024 x 1024 sample, predicted in 256 px tiles or in 768 px tiles, it finds the same diameter,
    to the last bit, as the untiled first pass; the labels at that scale still agree."""
    from nucleiseg.inference.tiling import default_tile_batch, default_tile_size

    cpu = Predictor.from_file(device="cpu")
    assert (cpu.tile_size, cpu.batch_size) == (default_tile_size("cpu"), default_tile_batch("cpu")) == (768, 1)
    assert (default_tile_size("cuda"), default_tile_batch("cuda")) == (1024, 4)
    path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("76a372bfd3fa"))
    image = read_image(path)
    assert image.shape[:2] == (1024, 1024)
    estimates = {}
    for t in (256, 768, 1024):
        predictor = cpu if t == 768 else Predictor.from_file(device="cpu", tile_size=t)
        estimates[t] = predictor.segment(image)
    assert estimates[256].diameter == estimates[768].diameter == estimates[1024].diameter
    assert estimates[768].scale == estimates[1024].scale != 1.0
    assert dsb_score(estimates[1024].labels, estimates[768].labels) > 0.9


def test_bad_tile_size():
    with pytest.raises(ValueError, match="multiple of 16"):
        Predictor(Pointwise(), ModelConfig(), torch.device("cpu"), tile_size=100)
    with pytest.raises(ValueError, match="multiple of 16"):  # 0 is a size, not "the device's default"
        Predictor(Pointwise(), ModelConfig(), torch.device("cpu"), tile_size=0)
    with pytest.raises(ValueError, match="> 2 \\* overlap"):  # the default size is checked too
        Predictor(Pointwise(), ModelConfig(), torch.device("cpu"), overlap=400)


def test_channels_last_gives_the_same_probabilities():
    path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("1c681dfa5cf7"))
    image = read_image(path)
    plain = Predictor.from_file(device="cpu", channels_last=False, precision="fp32")
    fast = Predictor.from_file(device="cpu", channels_last=True, precision="fp32")
    assert fast.model.inc[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.inc[3].weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(fast.predict_probabilities(image), plain.predict_probabilities(image), atol=1e-4)


def test_folded_batchnorm_network_computes_the_same_function():
    """A model read from a file runs with its BatchNorm folded into the convolutions: no
    BatchNorm left in what runs, the logits of the unfolded network within 1e-4 (float32), the
    model itself (what tune and export save) untouched; a predictor over a model still in
    training runs that very model, so validation sees its current weights."""
    from nucleiseg.model.unet import fold_batchnorm

    folded = Predictor.from_file(device="cpu", precision="fp32")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.network.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    x = torch.rand(2, 2, 96, 80)
    with torch.inference_mode():
        np.testing.assert_allclose(folded.network(x).numpy(), folded.model(x).numpy(), atol=1e-4)
    model = UNet(UNetConfig(2, 3, (4, 8, 16)))
    for m in model.modules():  # BatchNorm statistics other than the initial ones
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = fold_batchnorm(model)
    with torch.inference_mode():
        np.testing.assert_allclose(copy(x).numpy(), model.eval()(x).numpy(), atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    live = Predictor(model, ModelConfig(), torch.device("cpu"))
    assert live.network is live.model


def test_predict_options_override_without_changing_the_predictor():
    """Watershed values travel in PredictOptions; the predictor keeps the model's tuned values
    (at the original scale, diameter None, to compare with predict_probabilities)."""
    path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("1c681dfa5cf7"))
    image = read_image(path)
    predictor = Predictor.from_file(device="cpu")
    tuned = predictor.watershed
    loose = WatershedParams(0.3, 0.2, 0)
    labels = predictor.predict(image, PredictOptions(watershed=loose, diameter=None))
    assert predictor.watershed == tuned  # not mutated
    from nucleiseg.postprocess import probabilities_to_labels

    probabilities = predictor.predict_probabilities(image)
    np.testing.assert_array_equal(labels, probabilities_to_labels(probabilities, loose))
    np.testing.assert_array_equal(predictor.predict(image, PredictOptions(diameter=None)),
                                  probabilities_to_labels(probabilities, tuned))
    with pytest.raises(ValueError, match="label format"):
        PredictOptions(label_format="jpg")


def test_median_diameter_of_disks():
    from conftest import disk

    from nucleiseg.labels import median_diameter

    labels = np.zeros((60, 60), np.uint16)
    for k, (center, radius) in enumerate([((10, 10), 4), ((30, 30), 6), ((48, 45), 8)], start=1):
        labels[disk(labels.shape, center, radius)] = k
    areas = np.bincount(labels.ravel())[1:]
    assert median_diameter(labels) == (pytest.approx(np.sqrt(4 * areas[1] / np.pi)), 3)
    assert median_diameter(np.zeros((5, 5), np.uint8)) == (0.0, 0)


def test_scale_path_keeps_shapes_and_min_area():
    from nucleiseg.inference.predictor import scaled_watershed

    predictor = Predictor(Pointwise(), ModelConfig(nucleus_diameter=20.0), torch.device("cpu"))
    x = np.random.default_rng(1).random((1, 90, 70)).astype(np.float32)
    for scale in (0.5, 1.0, 1.7):
        p = predictor.probabilities(x, scale=scale)
        assert p.shape == (3, 90, 70)
        np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-4)  # still probabilities after resizing back
    assert predictor.scale_for(np.zeros((8, 8)), PredictOptions(diameter=40.0)) == (40.0, 0.5)
    assert predictor.scale_for(np.zeros((8, 8)), PredictOptions(diameter=21.0)) == (21.0, 1.0)  # within 10 %
    assert predictor.scale_for(np.zeros((8, 8)), PredictOptions()) == (None, 1.0)
    assert scaled_watershed(WatershedParams(0.6, 0.5, 40), 0.5).min_area == 160  # in original pixels
    with pytest.raises(ValueError, match="diameter"):
        PredictOptions(diameter=-3)


def test_auto_diameter_recovers_an_enlarged_image(sample_labels):
    """A sample whose nuclei have the training size, enlarged 2x: at the original scale the model
    breaks nuclei up (0.39 against 0.50 at the native size with the bundled model; 0.38 against
    0.48 with the 2-hour CPU model; 0.29 against 0.52 with the gray, DSB2018-only first model);
    --diameter auto (the default) finds them about twice the training size, shrinks the image by
    the model's training diameter over that estimate and comes close to its score at the native
    size."""
    import cv2

    from nucleiseg.data.images import read_label_image

    path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith("0a7d30b25235"))
    image, truth = read_image(path), read_label_image(bundled_samples_dir() / "labels" / f"{path.stem}.tif")
    big = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    big_truth = cv2.resize(truth, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    predictor = Predictor.from_file(device="cpu")
    original_scale = PredictOptions(diameter=None)
    native = dsb_score(truth, predictor.predict(image, original_scale))
    plain = dsb_score(big_truth, predictor.predict(big, original_scale))
    seg = predictor.segment(big, PredictOptions(diameter="auto"))
    assert seg.diameter == pytest.approx(2 * 19.4, rel=0.1)
    assert seg.scale == pytest.approx(predictor.config.nucleus_diameter / seg.diameter)
    # about half: the training diameter over twice the sample's, +- 0.05 as before the model changed
    assert seg.scale == pytest.approx(predictor.config.nucleus_diameter / (2 * 19.4), abs=0.05)
    assert seg.labels.shape == big.shape[:2]
    assert dsb_score(big_truth, seg.labels) > plain + 0.07 and dsb_score(big_truth, seg.labels) > native - 0.05


def test_auto_diameter_reuses_the_estimate_passes(monkeypatch):
    """An image that fits in the estimate's region is not run through the network again after it:
    --diameter auto costs the estimate's one or two passes, no more, and gives the labels that
    predicting afresh at the chosen scale gives."""
    from nucleiseg.postprocess import probabilities_to_labels

    predictor = Predictor.from_file(device="cpu")
    for prefix in ("0a7d30b25235", "4596961c789d"):  # 256 x 256 and 520 x 696
        path = next(p for p in (bundled_samples_dir() / "images").iterdir() if p.name.startswith(prefix))
        image = read_image(path)
        calls = []
        original = Predictor.probabilities_of_normalized
        monkeypatch.setattr(Predictor, "probabilities_of_normalized",
                            lambda self, x, *args: calls.append(x.shape) or original(self, x, *args))
        seg = predictor.segment(image)
        monkeypatch.setattr(Predictor, "probabilities_of_normalized", original)
        assert len(calls) == (2 if seg.scale != 1.0 else 1), (prefix, seg.scale, calls)
        afresh = probabilities_to_labels(predictor.probabilities(predictor.normalize(image), False, seg.scale, True),
                                         scaled_watershed(predictor.watershed, seg.scale))
        np.testing.assert_array_equal(seg.labels, afresh)
