"""Recipe options of ``nucleiseg train``: augmentation levels, sampling, EMA, watershed tuning and
the minimum size learned from the training nuclei, each checked against an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucleiseg.errors import NucleisegError
from nucleiseg.postprocess import WatershedParams
from nucleiseg.training.augment import AUGMENT_LEVELS, elastic, sample_batch
from nucleiseg.training.config import TrainConfig
from nucleiseg.training.loop import train
from nucleiseg.training.samples import Sample
from nucleiseg.training.validation import min_area_candidates, score_probabilities, tune_watershed


def _stripes(h=48, w=48):
    """An image whose value encodes its column, so crops and flips can be traced back."""
    image = np.tile(np.arange(w, dtype=np.float32) / w, (h, 1))
    classes = (np.arange(w)[None, :].repeat(h, 0) % 3).astype(np.uint8)
    return image, classes


@pytest.mark.parametrize("level", AUGMENT_LEVELS)
def test_augment_levels(level):
    image, classes = _stripes()
    rng = np.random.default_rng(3)
    xs, ys, _, _ = sample_batch([image], [classes], np.ones(1), 16, 32, rng, augment=level)
    assert xs.shape == (16, 1, 32, 32) and ys.shape == (16, 32, 32)
    assert set(np.unique(ys)) <= {0, 1, 2}
    columns = set(np.round(image[0] * 48).astype(int))
    if level in ("none", "flips"):  # no resampling, no intensity change: every pixel is a source pixel
        assert set(np.round(xs.ravel() * 48).astype(int)) <= columns
        for x, y in zip(xs[:, 0], ys):  # the image still encodes the class of each pixel
            np.testing.assert_array_equal(np.round(x * 48).astype(int) % 3, y)
    if level == "none":  # no flips: columns increase left to right
        assert (np.diff(xs[:, 0], axis=-1) > 0).all()
    if level == "flips":
        assert any((np.diff(x, axis=0) != 0).any() for x in xs[:, 0])  # some crops were rotated
    if level in ("full", "heavy"):  # intensity augmentation changes values
        assert not set(np.round(xs.ravel() * 48, 3)) <= {float(c) for c in columns}


def test_elastic_identity_and_alignment():
    image, classes = _stripes()
    rng = np.random.default_rng(0)
    same = elastic([image, classes], rng, alpha=0.0)
    np.testing.assert_allclose(same[0], image, atol=1e-6)
    np.testing.assert_array_equal(same[1], classes)
    moved = elastic([image, classes], rng, alpha=4.0)
    assert moved[1].dtype == np.uint8 and set(np.unique(moved[1])) <= {0, 1, 2}
    assert np.abs(moved[0] - image).max() > 0.01  # something moved
    assert np.abs(moved[0] - image).max() < 5 / 48 + 1e-6  # by at most alpha (+ 1 px interpolation)


def test_bad_recipe_options_are_refused():
    for kw in ({"sampling": "random"}, {"augment": "max"}, {"schedule": "step"}, {"ema": 1.0}):
        with pytest.raises(NucleisegError):
            TrainConfig(**kw)


def _sample(labels: np.ndarray) -> Sample:
    return Sample("x", np.zeros(labels.shape, np.float32), np.zeros(labels.shape, np.uint8), labels, "fluorescence")


def test_min_area_candidates_are_quantiles_of_training_nuclei():
    a = np.zeros((40, 40), np.uint16)
    a[0:2, 0:2] = 1  # 4 px
    a[10:15, 10:15] = 2  # 25 px
    b = np.zeros((30, 30), np.uint16)
    b[0:10, 0:10] = 3  # 100 px
    b[20:21, 20:29] = 7  # 9 px (labels with gaps)
    got = min_area_candidates([_sample(a), _sample(b)], (0.0, 0.25, 0.5, 1.0))
    areas = [4, 25, 100, 9]
    assert got == {0.0: 0, 0.25: int(np.quantile(areas, 0.25)), 0.5: int(np.quantile(areas, 0.5)), 1.0: 100}


def test_tune_watershed_equals_brute_force():
    """The shared-watershed grid gives the same best score as running every grid point in full."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :64]
    samples, probs = [], []
    for k in range(3):
        labels = np.zeros((64, 64), np.uint16)
        n = 0
        for cy, cx, r in rng.integers([8, 8, 2], [56, 56, 9], size=(6, 3)):
            n += 1
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = n
        inside = (labels > 0).astype(np.float32)
        p0 = np.clip(inside * rng.uniform(0.3, 1.0, (64, 64)), 0, 1).astype(np.float32)
        p1 = (1 - p0) * rng.uniform(0, 0.6, (64, 64)).astype(np.float32)
        probs.append(np.stack([p0, p1, 1 - p0 - p1]))
        samples.append(_sample(labels))
    markers, masks, areas = (0.4, 0.6, 0.8), (0.3, 0.5), (0, 5, 30)
    best, score = tune_watershed(probs, samples, areas, markers, masks)
    brute = max(score_probabilities(probs, samples, WatershedParams(m, k, a)).score
                for m in markers for k in masks for a in areas)
    assert score == pytest.approx(brute, abs=1e-12)
    assert score_probabilities(probs, samples, best).score == pytest.approx(score, abs=1e-12)


def test_ema_weights_are_what_is_saved(tmp_path, small_dsb):
    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=4, val_every=4, ema=0.5, tune=False,
                      sampling="uniform", augment="heavy", schedule="constant")
    result = train(small_dsb, tmp_path / "m.pt", cfg, torch.device("cpu"))
    assert result.training["ema"] == 0.5 and result.watershed == WatershedParams()
    state = torch.load(tmp_path / "m.pt.resume.pt", weights_only=True)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    weights = {k: v.float() for k, v in saved["state_dict"].items()}
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    raw = state["model"]
    name = next(k for k in weights if k.endswith("weight"))
    torch.testing.assert_close(weights[name], ema[name].float(), rtol=0, atol=2e-3)  # fp16 storage
    assert not torch.allclose(weights[name], raw[name].float(), atol=1e-3)  # not the raw weights


def test_cli_tune_rewrites_watershed_values(tmp_path, small_dsb):
    from click.testing import CliRunner

    from nucleiseg.cli import main
    from nucleiseg.model.file import read_model_file
    from nucleiseg.training.validation import MARKER_THRESHOLDS, MASK_THRESHOLDS

    out = tmp_path / "tuned.pt"
    result = CliRunner().invoke(main, ["-q", "tune", str(small_dsb), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    model, config = read_model_file(out)
    ws = config.watershed
    assert ws.marker_threshold in MARKER_THRESHOLDS and ws.mask_threshold in MASK_THRESHOLDS
    assert ws.min_area in config.min_area_quantiles.values()
    v = config.validation
    assert v.score >= v.score_default_watershed - 1e-12 and len(v.ids) == 1
    bundled, _ = read_model_file(None)
    for a, b in zip(model.state_dict().values(), bundled.state_dict().values()):
        torch.testing.assert_close(a, b)  # same weights


def test_train_leaves_the_callers_config_alone(tmp_path, small_dsb, monkeypatch):
    """No budget given: the run takes the default epochs, recorded in the model file, while the
    caller's (frozen) config still says None."""
    import dataclasses

    from nucleiseg.training import config as config_module

    monkeypatch.setattr(config_module, "DEFAULT_EPOCHS", 1)  # one epoch of the 2 training images: 1 step
    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, val_every=1, tune=False)
    result = train(small_dsb, tmp_path / "m.pt", cfg, torch.device("cpu"))
    assert cfg.epochs is None and result.training["epochs"] == 1 and result.training["steps_done"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3


def test_cli_train_options_come_from_train_config():
    """Every TrainConfig field is a `train` option with the field's default and choices."""
    import dataclasses

    import click

    from nucleiseg.cli import main
    from nucleiseg.training.config import choices

    params = {p.name: p for p in main.commands["train"].params}
    for f in dataclasses.fields(TrainConfig):
        option = params[f.name]
        expected = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        assert option.default == expected, f.name
        if f.name in choices():
            assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == choices()[f.name]
        assert option.help, f.name  # documented in TrainConfig's docstring
    assert "--no-tune" in params["tune"].secondary_opts  # the old spelling still works


def test_sampling_weights_per_collection():
    from nucleiseg.training.samples import sampling_weights

    def sample(collection, size, mod="fluorescence"):
        return Sample("x", np.zeros((size, size), np.float32), np.zeros((size, size), np.uint8),
                      np.zeros((size, size), np.uint16), mod, collection=collection)

    samples = [sample("a", 10), sample("a", 20), sample("a", 20, "histology"), sample("b", 50), sample("b", 5)]
    p = sampling_weights(samples, "balanced", {"a": 2.0, "b": 1.0})
    assert p.sum() == pytest.approx(1.0)
    assert p[:3].sum() == pytest.approx(2 / 3) and p[3:].sum() == pytest.approx(1 / 3)
    # within a collection, balanced: sqrt(pixels) / sqrt(images of its modality in that collection)
    assert p[1] / p[0] == pytest.approx((20 / np.sqrt(2)) / (10 / np.sqrt(2)))
    assert p[2] / p[1] == pytest.approx(20 / (20 / np.sqrt(2)))
    assert p[3] / p[4] == pytest.approx(10.0)
    one = sampling_weights(samples[:3], "balanced")  # one collection: as before, no collection weight
    expected = np.array([10 / np.sqrt(2), 20 / np.sqrt(2), 20.0])
    np.testing.assert_allclose(one, expected / expected.sum())


@pytest.mark.slow
def test_training_on_two_collections(tmp_path, small_dsb, sample_ids, sample_labels):
    """A DSB2018 folder and a Cellpose folder: per-collection validation in the log and the model
    file, each collection's provenance and licence recorded."""
    import shutil
    import subprocess
    import sys

    from conftest import write_png
    from nucleiseg.data.sources import bundled_samples_dir
    from nucleiseg.model.file import read_model_file

    cellpose = tmp_path / "cellpose"
    cellpose.mkdir()
    for image_id in sample_ids[3:7]:
        shutil.copy(bundled_samples_dir() / "images" / f"{image_id}.png", cellpose / f"c{image_id[:6]}.png")
        write_png(cellpose / f"c{image_id[:6]}_masks.png", sample_labels[image_id].astype(np.uint16))
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "-q", "train", str(small_dsb), str(cellpose),
                           "--out", str(tmp_path / "m.pt"), "--collection-weights", "3,1", "--steps", "2",
                           "--val-every", "2", "--features", "4,8", "--crop-size", "32", "--batch-size", "2",
                           "--device", "cpu", "--no-tune"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DSB2018 stage1_train (CC0 1.0): 2 training and 1 validation images, drawn with weight 3" in proc.stderr
    assert "cellpose (unknown (give it with --licence)): 3 training and 1 validation images, drawn with weight 1" \
        in proc.stderr
    config = read_model_file(tmp_path / "m.pt").config
    assert [(r["name"], r["weight"], r["n_train"], r["n_validation"]) for r in config.trained_on] == [
        ("DSB2018 stage1_train", 3.0, 2, 1), ("cellpose", 1.0, 3, 1)]
    assert config.licences()[0] == "DSB2018 stage1_train: CC0 1.0"
    v = config.validation
    assert set(v.per_collection) == {"DSB2018 stage1_train", "cellpose"} and len(v.ids) == 2
    assert v.score == pytest.approx(np.mean(list(v.per_collection.values())), abs=1e-12)  # each collection alike
    assert config.history[-1]["val_per_collection"] == v.per_collection


def test_training_images_resized_to_the_canonical_diameter(tmp_path, small_dsb):
    """--diameter D (Cellpose's canonical size): a sample of disks 40 px across comes out half the
    size with disks of about D = 20 px, its classes the class map of its resized labels; a run
    with it records D as the model's training diameter."""
    from nucleiseg.labels import median_diameter
    from nucleiseg.targets.border import class_map
    from nucleiseg.training.samples import at_diameter

    yy, xx = np.mgrid[:200, :240]
    labels = np.zeros((200, 240), np.uint16)
    for i, (r, c) in enumerate([(50, 50), (50, 150), (140, 60), (140, 170)], start=1):
        labels[(yy - r) ** 2 + (xx - c) ** 2 < 20**2] = i
    image = (labels > 0).astype(np.float32)[None].repeat(2, 0)
    sample = Sample("disks", image, class_map(labels, 2), labels, "fluorescence")
    assert median_diameter(labels)[0] == pytest.approx(40, abs=0.5)
    small = at_diameter(sample, 20.0, 2)
    s = 20.0 / median_diameter(labels)[0]  # about a half
    assert small.image.shape == (2, round(200 * s), round(240 * s)) and small.labels.shape == small.image.shape[1:]
    assert median_diameter(small.labels) == (pytest.approx(20, abs=1), 4)
    np.testing.assert_array_equal(small.classes, class_map(small.labels, 2))
    fg, truth = small.image[0] > 0.5, small.labels > 0  # image and labels still cover each other (outline +-1 px)
    assert (fg & truth).sum() / (fg | truth).sum() > 0.95
    empty = Sample("empty", image, class_map(labels * 0, 2), labels * 0, "fluorescence")
    assert at_diameter(empty, 20.0, 2) is empty
    with pytest.raises(NucleisegError, match="diameter must be > 0"):
        TrainConfig(diameter=0)
    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=2, val_every=2, tune=False, diameter=25.0)
    result = train(small_dsb, tmp_path / "m.pt", cfg, torch.device("cpu"))
    assert result.nucleus_diameter == 25.0 and result.training["diameter"] == 25.0
