"""DSB2018 reading with defect reports, image reading, normalisation, U-Net shapes, model files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import disk, make_dsb_item, write_png
from nucleiseg.data.dsb2018 import iter_dsb2018, read_item
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.errors import ImageReadError, ModelFileError
from nucleiseg.io import write_label_image
from nucleiseg.model.config import ModelConfig, UNetConfig, ValidationRecord
from nucleiseg.model.file import bundled_model_path, read_model_file, save_model_file
from nucleiseg.model.unet import UNet
from nucleiseg.postprocess import WatershedParams
from nucleiseg.transforms import normalize_image


def test_defects_are_reported_not_hidden(tmp_path):
    shape = (40, 50)
    image = np.full(shape + (3,), 20, np.uint8)
    a = disk(shape, (10, 10), 5)
    b = disk(shape, (10, 17), 5)  # overlaps a
    two_pieces = disk(shape, (30, 10), 3) | disk(shape, (30, 40), 3)
    empty = np.zeros(shape, bool)
    wrong = np.ones((10, 10), bool)
    make_dsb_item(tmp_path, "img", image, [a, b, two_pieces, empty, wrong])
    item = read_item(tmp_path, "img")
    kinds = sorted(d.kind for d in item.defects)
    assert kinds == ["disconnected", "empty", "overlap", "shape"]
    assert item.n_nuclei == 3
    # overlap pixels stay with the earlier mask; no nucleus silently dropped
    assert (item.labels[a] == 1).all()
    assert set(np.unique(item.labels[b])) == {1, 2}
    assert (item.labels[two_pieces] == 3).all()


def test_missing_image_is_reported_and_batch_goes_on(tmp_path):
    make_dsb_item(tmp_path, "good", np.zeros((8, 8), np.uint8), [disk((8, 8), (4, 4), 2)])
    (tmp_path / "bad" / "images").mkdir(parents=True)
    out = list(iter_dsb2018(tmp_path))
    assert isinstance(out[0], ImageReadError) and "missing image bad.png" in str(out[0])
    assert out[1].image_id == "good" and out[1].n_nuclei == 1


def test_real_defects_on_bundled_sample(dsb_root, sample_ids):
    # 0a7d30b2... has two masks that share 2 pixels in the released data
    image_id = next(i for i in sample_ids if i.startswith("0a7d30b25235"))
    item = read_item(dsb_root, image_id)
    assert [d.kind for d in item.defects] == ["overlap"]
    assert "2 px" in item.defects[0].detail


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 0), (np.uint8, 3), (np.uint8, 4), (np.uint16, 0), (np.uint16, 3)])
def test_read_image_types(tmp_path, dtype, channels):
    shape = (7, 9) + ((channels,) if channels else ())
    data = (np.arange(np.prod(shape)).reshape(shape) * 97 % np.iinfo(dtype).max).astype(dtype)
    write_png(tmp_path / "x.png", data)
    got = read_image(tmp_path / "x.png")
    assert got.dtype == dtype and got.shape == shape
    if channels == 0:
        np.testing.assert_array_equal(got, data)


def test_read_image_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="text.png: not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_label_tiff_round_trip(tmp_path, sample_labels):
    import imageio.v3 as iio
    import tifffile

    labels = next(iter(sample_labels.values()))
    write_label_image(tmp_path / "l.tif", labels)
    np.testing.assert_array_equal(read_label_image(tmp_path / "l.tif"), labels)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), labels)
    assert tifffile.imread(tmp_path / "l.tif").dtype == np.uint16
    np.testing.assert_array_equal(iio.imread(tmp_path / "l.tif"), labels)


def test_normalization_puts_nuclei_bright():
    dark_bg = np.full((32, 32), 10, np.uint8)
    dark_bg[8:16, 8:16] = 200
    light_bg = 255 - dark_bg
    a, b = normalize_image(dark_bg), normalize_image(light_bg)
    assert a[10, 10] > 0.9 and a[0, 0] < 0.1
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert normalize_image(np.full((5, 5), 7, np.uint16)).max() == 0
    rgb16 = np.stack([dark_bg.astype(np.uint16) * 200] * 3 + [np.full((32, 32), 65535, np.uint16)], axis=-1)
    np.testing.assert_allclose(normalize_image(rgb16), a, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 2), (40, 50, 3), (40, 50, 4)])
def test_8_bit_normalisation_table_equals_the_float_path(shape):
    """8-bit images are normalised through a lookup table of channel sums; the values are those
    of the same image as float32 (the per-pixel path), bit for bit, inverted or not; the
    haematoxylin channel's tables give skimage's rgb2hed of the image scaled by its maximum."""
    from skimage.color import rgb2hed

    from nucleiseg.transforms import NormalizationParams, _haematoxylin, apply_normalization

    rng = np.random.default_rng(len(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    for params in (NormalizationParams(10.0, 200.5, True), NormalizationParams(3.3, 77.0, False),
                   NormalizationParams(5.0, 5.0, False)):
        table = apply_normalization(image, params)
        assert table.dtype == np.float32 and table.shape == shape[:2]
        np.testing.assert_array_equal(table, apply_normalization(image.astype(np.float32), params))
    if len(shape) == 3 and shape[2] >= 3:
        dim = (image[..., :3] // 2).astype(np.uint8)  # maximum below 255: scaled by it
        for rgb in (image, dim):
            reference = rgb2hed(rgb[..., :3].astype(np.float32) / float(rgb[..., :3].max()))[..., 0]
            np.testing.assert_allclose(_haematoxylin(rgb), reference, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(_haematoxylin(rgb), _haematoxylin(rgb.astype(np.uint16)))


@pytest.mark.parametrize("h, w", [(1, 1), (7, 13), (31, 64), (65, 33), (100, 257)])
def test_unet_output_shape_any_size(h, w):
    model = UNet(UNetConfig(1, 3, (4, 8, 16, 32))).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, h, w))
    assert out.shape == (2, 3, h, w)


def test_model_file_round_trip_and_refusals(tmp_path):
    model = UNet(UNetConfig(1, 3, (4, 8))).eval()
    config = ModelConfig(watershed=WatershedParams(0.7, 0.4, 12), training={"seed": 3},
                         validation=ValidationRecord(0.5, {"fluorescence": 0.5}, step=7))
    save_model_file(tmp_path / "m.pt", model, config, half=False)
    loaded, back = read_model_file(tmp_path / "m.pt")
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert back == config.replace(unet=UNetConfig(1, 3, (4, 8)))  # every entry read back as written
    assert back.watershed.marker_threshold == 0.7 and back.validation.step == 7

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "nucleiseg-model", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="not a loadable"):
        read_model_file(tmp_path / "evil.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["unet"]["features"] = [4, 8, 16]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match="do not match"):
        read_model_file(tmp_path / "mismatch.pt")
    for key, value, message in (("watershed", {"marker_threshold": 1.5, "mask_threshold": 0.5, "min_area": 1},
                                 "marker_threshold must be a probability"),
                                ("normalization", {"p_low": 50.0, "p_high": 10.0}, "p_low < p_high"),
                                ("surprise", 1, "unknown config entries")):
        payload = torch.load(tmp_path / "m.pt", weights_only=True)
        payload["config"][key] = value
        torch.save(payload, tmp_path / "bad.pt")
        with pytest.raises(ModelFileError, match=f"bad.pt: invalid model configuration .*{message}"):
            read_model_file(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ModelFileError):
        read_model_file(tmp_path / "junk.pt")


def test_bundled_model_file_reads_as_it_is():
    """The bundled file's stored entries read back to the same values: the GPU model of issue 14
    (README "The bundled model"), on gray + haematoxylin input, trained on DSB2018 and MoNuSeg 2018
    (101 + 7 validation images) for 22,708 steps, best checkpoint step 21,000, tuned on the CPU."""
    _, config = read_model_file(None)
    raw = torch.load(bundled_model_path(), weights_only=True)["config"]
    assert config.to_dict() == raw
    assert config.watershed == WatershedParams(0.7, 0.6, 47)
    assert config.normalization.channels == "gray+haematoxylin" and config.unet.in_channels == 2
    assert config.validation.score == pytest.approx(0.4345, abs=5e-5) and len(config.validation.ids) == 108
    assert config.validation.per_collection["DSB2018 stage1_train"] == pytest.approx(0.5836, abs=5e-5)
    assert config.validation.step == 21000 and config.training["steps_done"] == 22708
    assert config.training["device"] == "cuda" and config.training["seed"] == 1
    assert [r["licence"] for r in config.trained_on] == ["CC0 1.0", "CC BY-NC-SA 4.0"]


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".tif"])
def test_read_jpeg_bmp_tiff(tmp_path, suffix):
    rgb = np.zeros((12, 10, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 40  # red-ish in RGB order
    path = tmp_path / f"x{suffix}"
    if suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, rgb, photometric="rgb")
    else:
        assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    got = read_image(path)
    assert got.shape == (12, 10, 3)
    assert abs(int(got[5, 5, 0]) - 200) <= 3 and abs(int(got[5, 5, 2]) - 40) <= 3  # RGB order kept


def test_network_input_channels(sample_ids):
    from skimage.color import rgb2hed

    from nucleiseg.data.sources import bundled_samples_dir
    from nucleiseg.transforms import input_channel_count, is_colour, network_input

    by_id = {i: read_image(bundled_samples_dir() / "images" / f"{i}.png") for i in sample_ids}
    colour = next(img for img in by_id.values() if is_colour(img))  # an H&E sample
    gray = next(img for img in by_id.values() if not is_colour(img))  # a fluorescence sample
    for channels in ("gray", "gray+haematoxylin", "rgb"):
        for image in (colour, gray):
            x = network_input(image, channels)
            assert x.shape == (input_channel_count(channels),) + image.shape[:2] and x.dtype == np.float32
            assert x.min() >= 0 and x.max() <= 1
            if channels != "rgb":  # the first channel is always the normalised gray image
                np.testing.assert_array_equal(x[0], normalize_image(image))
    # gray images: the extra channels repeat the normalised gray image (a nuclear signal already)
    np.testing.assert_array_equal(network_input(gray, "gray+haematoxylin")[1], normalize_image(gray))
    np.testing.assert_array_equal(network_input(gray, "rgb"), np.stack([normalize_image(gray)] * 3))
    # colour images: the haematoxylin channel of the colour deconvolution, stretched at 1 / 99.8 %
    h = rgb2hed(colour[..., :3] / 255.0)[..., 0]
    lo, hi = np.percentile(h, [1.0, 99.8])
    np.testing.assert_allclose(network_input(colour, "gray+haematoxylin")[1], np.clip((h - lo) / (hi - lo), 0, 1),
                               atol=1e-5)
    # rgb keeps colour: inverted with the gray image (light background), so the channels differ
    rgb = network_input(colour, "rgb")
    assert not np.allclose(rgb[0], rgb[1]) and rgb.mean(axis=(1, 2)).max() < 0.6


def test_train_and_predict_with_colour_input(tmp_path, small_dsb, sample_ids):
    """A model taking gray + haematoxylin: its file says so, and whole-image, tiled and block-wise
    prediction all feed it two channels."""
    from nucleiseg.data.sources import bundled_samples_dir
    from nucleiseg.inference.blockwise import predict_blockwise
    from nucleiseg.inference.predictor import Predictor
    from nucleiseg.training.config import TrainConfig
    from nucleiseg.training.loop import train

    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=2, val_every=2, tune=False,
                      input_channels="gray+haematoxylin")
    config = train(small_dsb, tmp_path / "m.pt", cfg, "cpu")
    assert config.normalization.channels == "gray+haematoxylin" and config.unet.in_channels == 2
    model, back = read_model_file(tmp_path / "m.pt")
    assert back.normalization.channels == "gray+haematoxylin" and model.inc[0].in_channels == 2
    image = read_image(bundled_samples_dir() / "images" / f"{sample_ids[0]}.png")  # colour, 256 x 320
    predictor = Predictor(model, back, torch.device("cpu"))
    whole = predictor.predict_probabilities(image)
    tiled = Predictor(model, back, torch.device("cpu"), tile_size=128, overlap=32).predict_probabilities(image)
    assert whole.shape == tiled.shape == (3, 256, 320) and np.abs(whole - tiled).mean() < 0.05
    labels, stats = predict_blockwise(predictor, image, block_size=160, halo=32)
    assert labels.shape == (256, 320) and stats.blocks == 4
