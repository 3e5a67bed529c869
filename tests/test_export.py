"""ONNX export and the onnxruntime backend, bioimage.io packages, and the stand-alone U-Net
file both ship. Tests of an optional extra skip cleanly without it (scripts/setup.sh test
installs every extra)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nucleiseg.cli import main
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.errors import ModelFileError
from nucleiseg.inference.predictor import load_model
from nucleiseg.model import unet_core


def _samples():
    return sorted((bundled_samples_dir() / "images").iterdir())


def test_unet_core_stands_alone_and_matches_the_unet():
    # bioimage.io loads unet_core.py as a lone file: it must import nothing of nucleiseg
    spec = importlib.util.spec_from_file_location("lone_unet_core", unet_core.__file__)
    lone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lone)
    predictor = load_model(device="cpu")
    config = predictor.config.unet
    net = lone.SoftmaxUNet(config.in_channels, config.out_channels, list(config.features)).eval()
    net.load_state_dict(predictor.model.state_dict())
    x = torch.rand(2, config.in_channels, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(predictor.model(x), dim=1)
        np.testing.assert_allclose(net(x).numpy(), expected.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------ ONNX



@pytest.fixture(scope="module")
def onnx_predictor():
    pytest.importorskip("onnx", reason="the 'onnx' extra is not installed")
    pytest.importorskip("onnxruntime", reason="the 'onnx' extra is not installed")
    return load_model(None, "cpu", "onnx")


def test_onnx_labels_equal_pytorch_on_the_bundled_samples(onnx_predictor):
    torch_predictor = load_model(device="cpu", precision="fp32")  # the ONNX graph is float32
    for path in _samples():
        image = read_image(path)
        p_torch = torch_predictor.predict_probabilities(image)
        p_onnx = onnx_predictor.predict_probabilities(image)
        assert np.abs(p_torch - p_onnx).max() < 1e-4, path.name
        np.testing.assert_array_equal(onnx_predictor.predict(image), torch_predictor.predict(image), err_msg=path.name)


def test_onnx_file_carries_the_model_config(tmp_path, onnx_predictor):
    from nucleiseg.export import export_onnx, read_onnx_config

    out = export_onnx(None, tmp_path / "m.onnx")
    config = read_onnx_config(out.read_bytes(), str(out))
    assert config == load_model(device="cpu").config
    from_file = load_model(out, "cpu", "onnx")
    assert from_file.watershed == config.watershed and from_file.backend == "onnx"
    image = read_image(_samples()[0])
    np.testing.assert_array_equal(from_file.predict(image), onnx_predictor.predict(image))
    # TTA and tiling go through the same Predictor code
    np.testing.assert_allclose(from_file.predict_probabilities(image, tta=True),
                               load_model(device="cpu", precision="fp32").predict_probabilities(image, tta=True),
                               atol=1e-4)


def test_onnx_mistakes_are_one_line(tmp_path, onnx_predictor):
    from nucleiseg.export import export_onnx

    out = export_onnx(None, tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match="an ONNX model; run it with --backend onnx"):
        load_model(out, "cpu", "torch")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.onnx: not a readable ONNX model"):
        load_model(tmp_path / "junk.onnx", "cpu", "onnx")
    import onnx

    bare = onnx.load(str(out))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="without nucleiseg's metadata"):
        load_model(tmp_path / "bare.onnx", "cpu", "onnx")
    with pytest.raises(ValueError, match="torch backend only"):
        load_model(None, "cpu", "onnx", compile=True)
    import nucleiseg

    assert nucleiseg.load_model(out, device="cpu", backend="onnx").backend == "onnx"  # the public API


def test_predict_backend_onnx_cli_equals_torch(tmp_path, onnx_predictor):
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--onnx", str(tmp_path / "m.onnx")], catch_exceptions=False)
    assert r.exit_code == 0 and "wrote" in r.output
    r = runner.invoke(main, ["-q", "predict", "-o", str(tmp_path / "onnx"), "--backend", "onnx", "--model",
                             str(tmp_path / "m.onnx"), "--no-overlay"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "on cpu, onnx" in r.output and "DSB score on the 8 bundled samples: 0.4551" in r.output
    r = runner.invoke(main, ["-q", "predict", "-o", str(tmp_path / "torch"), "--no-overlay", "--device", "cpu",
                             "--precision", "fp32"],
                      catch_exceptions=False)
    for path in _samples():
        np.testing.assert_array_equal(read_label_image(tmp_path / "onnx" / f"{path.stem}.tif"),
                                      read_label_image(tmp_path / "torch" / f"{path.stem}.tif"))
    r = runner.invoke(main, ["bench", "predict", "--onnx", "--no-tta", "--device", "cpu", "--precision", "fp32", "--json",
                             str(tmp_path / "b.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["torch", "onnx"] * 6  # side by side, per image size
    assert all(r["same_labels"] for r in rows)


# ------------------------------------------------------------------------------- bioimage.io


def test_weights_licence_is_the_most_restrictive():
    from nucleiseg.bioimageio import weights_licence
    from nucleiseg.errors import NucleisegError

    assert weights_licence([]) == "MIT"
    assert weights_licence([{"name": "DSB", "licence": "CC0 1.0"}]) == "MIT"
    assert weights_licence([{"name": "DSB", "licence": "CC0 1.0"},
                            {"name": "MoNuSeg", "licence": "CC BY-NC-SA 4.0"}]) == "CC-BY-NC-SA-4.0"
    with pytest.raises(NucleisegError, match="cannot tell"):
        weights_licence([{"name": "ours", "licence": "unknown (give it with --licence)"}])


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is the format deepImageJ runs
def test_bioimageio_package_validates_and_its_test_run_passes(tmp_path):
    pytest.importorskip("bioimageio.core", reason="the 'bioimageio' extra is not installed")
    import zipfile

    import yaml

    out = tmp_path / "nucleiseg.zip"
    r = CliRunner().invoke(main, ["export", "--bioimageio", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "bioimageio.core validation and test run: passed" in r.output
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        test_input = np.load(z.open("test_input.npy"))
        test_output = np.load(z.open("test_output.npy"))
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "weights.onnx", "unet_core.py", "README.md"} <= names
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["license"] == "CC-BY-NC-SA-4.0"  # the bundled model was trained on MoNuSeg
    assert rdf["format_version"].startswith("0.5")
    steps = {p["id"]: p.get("kwargs", {}) for p in rdf["inputs"][0]["preprocessing"]}
    assert steps["scale_range"]["min_percentile"] == 1.0 and steps["scale_range"]["max_percentile"] == 99.8
    assert steps["clip"] == {"min": 0.0, "max": 1.0}
    # the test output is nucleiseg's own: probabilities summing to 1 over the 3 channels
    assert test_input.shape[:2] == (1, 2) and test_output.shape[:2] == (1, 3)
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)
    # and an independent run of the package's pre-processing + TorchScript weights reproduces it
    x = test_input.copy()
    for c in range(x.shape[1]):
        lo, hi = np.percentile(x[0, c], [1.0, 99.8])
        x[0, c] = np.clip((x[0, c] - lo) / (hi - lo + 1e-6), 0, 1)
    with zipfile.ZipFile(out) as z:
        (tmp_path / "ts.pt").write_bytes(z.read("weights_torchscript.pt"))
    with torch.no_grad():
        again = torch.jit.load(str(tmp_path / "ts.pt"))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(again, test_output, atol=1e-3)


@pytest.mark.slow
def test_dask_workers_run_the_onnx_backend(tmp_path, onnx_predictor):
    pytest.importorskip("distributed", reason="the 'cluster' extra is not installed")
    from nucleiseg.inference.cluster import connect, predict_on_cluster
    from nucleiseg.inference.predictor import PredictOptions

    paths = _samples()[:3]
    with connect(workers=1) as client:
        results = predict_on_cluster(client, paths, tmp_path / "out", None, PredictOptions(overlay=False, geojson=True),
                                     device="cpu", backend="onnx")
    assert [r.status for r in results] == ["done"] * 3
    torch_predictor = load_model(device="cpu", precision="fp32")  # the ONNX graph is float32
    for path in paths:
        np.testing.assert_array_equal(read_label_image(tmp_path / "out" / f"{path.stem}.tif"),
                                      torch_predictor.predict(read_image(path)))
        assert (tmp_path / "out" / f"{path.stem}.geojson").is_file()


# ------------------------------------------------------------------------------------ blocks


def _randomised(model):
    """``model`` in eval mode with BatchNorm statistics and affine values other than the initial ones."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_blocks_compute_their_papers_formulas():
    """The residual block is ReLU(body(x) + projection(x)) (He et al. 2016, Fig. 2 and eq. 2) and
    scSE is x * (channel gate + spatial gate) (Roy et al. 2018, eq. 1-3), written out here with
    torch.nn.functional on the blocks' own weights."""
    import torch.nn.functional as F

    def bn(x, m):
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 10)
    block = _randomised(unet_core.conv_block(3, 5, "residual+scse"))
    residual, gate = block
    c1, b1, _, c2, b2 = residual.body
    p, pb = residual.shortcut
    inner = F.relu(bn(F.conv2d(x, c1.weight, padding=1), b1))
    y = F.relu(bn(F.conv2d(inner, c2.weight, padding=1), b2) + bn(F.conv2d(x, p.weight), pb))
    fc1, fc2 = gate.channel[1], gate.channel[3]
    squeezed = y.mean(dim=(2, 3), keepdim=True)
    channel = torch.sigmoid(F.conv2d(F.relu(F.conv2d(squeezed, fc1.weight, fc1.bias)), fc2.weight, fc2.bias))
    spatial = torch.sigmoid(F.conv2d(y, gate.spatial[0].weight, gate.spatial[0].bias))
    with torch.no_grad():
        np.testing.assert_allclose(block(x).numpy(), (y * channel + y * spatial).numpy(), atol=1e-5)
        assert fc1.out_channels == 2 and gate.spatial[0].out_channels == 1  # reduction 2, one spatial map
        same_width = _randomised(unet_core.ResidualBlock(5, 5))
        assert isinstance(same_width.shortcut, torch.nn.Identity)
        np.testing.assert_allclose(same_width(y).numpy(), F.relu(same_width.body(y) + y).numpy(), atol=1e-6)
    assert isinstance(unet_core.conv_block(3, 5, "conv"), unet_core.DoubleConv)  # plain U-Nets keep their names
    with pytest.raises(ValueError, match="block must be one of"):
        unet_core.conv_block(3, 5, "dense")


@pytest.mark.parametrize("block", unet_core.BLOCKS)
def test_every_block_folds_exports_and_stands_alone(tmp_path, block):
    """Each kind of block round-trips through the model file, runs folded (the same function
    within 1e-4), loads into the lone unet_core.py that bioimage.io packages ship, and exports to
    an ONNX graph whose probabilities equal PyTorch's."""
    from typing import get_args

    from nucleiseg.export import network_onnx, softmax_network
    from nucleiseg.model.config import Block, ModelConfig, UNetConfig
    from nucleiseg.model.file import read_model_file, save_model_file
    from nucleiseg.model.unet import UNet, fold_batchnorm

    assert get_args(Block) == unet_core.BLOCKS  # the two lists of names agree
    torch.manual_seed(1)
    config = ModelConfig(unet=UNetConfig(2, 3, (4, 8, 16), block))
    model = _randomised(UNet(config.unet))
    save_model_file(tmp_path / "m.pt", model, config)
    model, again = read_model_file(tmp_path / "m.pt", "cpu")
    assert again.unet == config.unet and ("block" in again.unet.to_dict()) == (block != "conv")
    x = torch.rand(2, 2, 32, 40)
    spec = importlib.util.spec_from_file_location("lone_unet_core", unet_core.__file__)
    lone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lone)
    alone = lone.SoftmaxUNet(2, 3, [4, 8, 16], block).eval()
    alone.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), dim=1).numpy()
        np.testing.assert_allclose(fold_batchnorm(model)(x).numpy(), model(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(alone(x).numpy(), expected, atol=1e-6)
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        session = onnxruntime.InferenceSession(network_onnx(softmax_network(model, again), again))
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-5)
