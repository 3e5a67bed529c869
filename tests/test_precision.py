"""Speed options (issues 23, 24): the CPU's bf16 support read from /proc/cpuinfo, the
precision rules of training and inference, bf16 autocast against float32 on one step and on
one image's labels, batches drawn ahead in a thread, and a
resumed run equal to an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucleiseg import hardware
from nucleiseg.errors import NucleisegError
from nucleiseg.training.config import TrainConfig
from nucleiseg.training.prefetch import Prefetcher, batch_rng

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {name}
flags\t\t: fpu sse sse2 avx2 {flags}

processor\t: 1
model name\t: second processor, not read
flags\t\t: amx_bf16
"""


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Point nucleiseg.hardware at a hand-written /proc/cpuinfo."""

    def write(name: str, flags: str, vendor: str = "GenuineIntel"):
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(name=name, flags=flags, vendor=vendor))
        monkeypatch.setattr(hardware, "_CPUINFO", path)
        hardware._cpuinfo.cache_clear()

    yield write
    hardware._cpuinfo.cache_clear()


@pytest.mark.parametrize("flags, native", [("avx512f amx_tile amx_bf16 avx512_bf16", "amx_bf16"),
                                           ("avx512f avx512_bf16", "avx512_bf16"),
                                           ("avx512f avx512bw", None), ("", None)])
def test_native_bf16_from_cpuinfo_flags(fake_cpu, flags, native):
    fake_cpu("Intel(R) Xeon(R) Platinum 8480+", flags)
    assert hardware.cpu_name() == "Intel(R) Xeon(R) Platinum 8480+"
    assert hardware.cpu_bf16() == native  # the first processor's flags only
    expected = torch.bfloat16 if native else None
    assert hardware.autocast_dtype("auto", "cpu") is expected
    assert hardware.autocast_dtype("auto", "cuda") is torch.bfloat16  # always on a GPU
    assert hardware.autocast_dtype("fp32", "cuda") is None
    assert hardware.autocast_dtype("bf16", "cpu") is torch.bfloat16
    line = hardware.describe(torch.device("cpu"), expected)
    assert line.startswith("cpu (Intel(R) Xeon(R) Platinum 8480+, ")
    assert line.endswith(f"bf16 autocast: {native}" if native else "float32; no native bf16 on this CPU")


def test_no_cpuinfo_means_no_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "_CPUINFO", tmp_path / "missing")
    hardware._cpuinfo.cache_clear()
    try:
        assert hardware.cpu_bf16() is None and hardware.autocast_dtype("auto", "cpu") is None
        assert hardware.cpu_name()  # the platform's word for it
    finally:
        hardware._cpuinfo.cache_clear()


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        hardware.autocast_dtype("fp16", "cpu")
    with pytest.raises(NucleisegError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_bf16_inference_labels_follow_fp32(sample_ids, sample_labels):
    """bf16 autocast on the CPU (``--precision bf16``, the default on CPUs with native bf16) finds
    nearly the nuclei float32 finds, and scores as well against the truth, on the bundled sample
    with the most nuclei; the diameter estimate runs in float32 in both, so both choose the same
    scale to the last bit, on every bundled sample."""
    from nucleiseg.data.images import read_image
    from nucleiseg.data.sources import bundled_samples_dir
    from nucleiseg.inference.predictor import PredictOptions, Predictor
    from nucleiseg.metrics import image_metrics

    image_id = max(sample_ids, key=lambda i: sample_labels[i].max())
    image = read_image(bundled_samples_dir() / "images" / f"{image_id}.png")
    fp32 = Predictor.from_file(device="cpu", precision="fp32")
    bf16 = Predictor.from_file(device="cpu", precision="bf16")
    assert fp32.autocast is None and bf16.autocast is torch.bfloat16
    options = PredictOptions(diameter=None)
    a, b = fp32.predict(image, options), bf16.predict(image, options)
    assert image_metrics(a, b).dsb_score > 0.9
    truth = sample_labels[image_id]
    assert image_metrics(truth, b).dsb_score == pytest.approx(image_metrics(truth, a).dsb_score, abs=0.02)
    for i in sample_ids:
        image = read_image(bundled_samples_dir() / "images" / f"{i}.png")
        a, b = fp32.segment(image), bf16.segment(image)
        assert (a.diameter, a.scale) == (b.diameter, b.scale)
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor.from_file(device="cpu", precision="half")


def test_the_cast_network_computes_what_autocast_computes(sample_ids):
    """On the CPU a model read from a file runs bf16 through a bf16 copy of its folded network
    instead of autocast; autocast casts every convolution's input, weights and bias to bf16 and
    pools, concatenates and rectifies in the input's dtype, so the logits must be the same bit for
    bit, on a bundled sample's tiles of two sizes (one that needs padding to a multiple of 16).
    Float32 calls (the diameter estimate) still run the float32 network."""
    from nucleiseg.data.images import read_image
    from nucleiseg.data.sources import bundled_samples_dir
    from nucleiseg.inference.predictor import Predictor

    predictor = Predictor.from_file(device="cpu", precision="bf16")
    assert predictor.network_bf16 is not None
    assert next(predictor.network_bf16.parameters()).dtype == torch.bfloat16
    assert next(predictor.network.parameters()).dtype == torch.float32
    image = read_image(bundled_samples_dir() / "images" / f"{sorted(sample_ids)[0]}.png")
    x = predictor.normalize(image)
    for h, w in ((128, 160), (100, 75)):
        batch = np.stack([x[:, :h, :w], x[:, -h:, -w:]])
        cast = predictor._forward(batch)
        cast_network, predictor.network_bf16 = predictor.network_bf16, None
        try:
            autocast = predictor._forward(batch)
        finally:
            predictor.network_bf16 = cast_network
        np.testing.assert_array_equal(cast, autocast)
        float32 = predictor._forward(batch, float32=True)
        assert 0 < np.abs(float32 - cast).max() < 0.1
    assert Predictor.from_file(device="cpu", precision="fp32").network_bf16 is None


def test_the_diameter_estimate_runs_in_float32_and_the_rest_in_the_precision_asked(monkeypatch):
    """On an image larger than the estimate's region, the estimate's passes (its central region)
    are float32 and the whole image's pass is the predictor's precision."""
    from nucleiseg.inference import predictor as predictor_module
    from nucleiseg.inference.predictor import PredictOptions, Predictor

    monkeypatch.setattr(predictor_module, "SIZE_REGION", 128)
    predictor = Predictor.from_file(device="cpu", precision="bf16", tile_size=128, overlap=16)
    flags = []
    forward = predictor._forward
    monkeypatch.setattr(predictor, "_forward", lambda batch, float32=False: flags.append(float32) or forward(batch, float32))
    yy, xx = np.mgrid[:300, :300]
    image = np.zeros((300, 300), np.uint8)
    for cy in range(20, 300, 40):
        for cx in range(20, 300, 40):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 12**2] = 200
    segmentation = predictor.segment(image, PredictOptions(diameter="auto"))
    k = flags.index(False)  # the first pass over the whole image
    assert k >= 1 and all(flags[:k]) and not any(flags[k:])
    assert segmentation.diameter == pytest.approx(2 * 12, rel=0.15) and segmentation.labels.max() == 49


def test_bf16_step_follows_the_fp32_step():
    """One optimiser step from the same weights on the same batch: bf16 autocast's loss within 2 %
    of float32's, and the updated weights within a small fraction of the step itself."""
    from nucleiseg.training import ddp
    from nucleiseg.training.loop import train_step
    from nucleiseg.training.loss import SegmentationLoss
    from nucleiseg.training.state import TrainingState

    cfg = TrainConfig(features=(8, 16, 32), batch_size=4, crop_size=64, input_channels="gray+haematoxylin")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    classes = np.full((4, 64, 64), 2, np.int64)
    classes[:, (yy - 32) ** 2 + (xx - 30) ** 2 < 15**2] = 0
    image = np.where(classes == 0, 0.8, 0.1)[:, None].repeat(2, 1).astype(np.float32)
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    batch = (image, classes, None, np.arange(4))
    device = torch.device("cpu")
    losses, weights, before = {}, {}, None
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        state = TrainingState.new(cfg, device)
        state.model.to(memory_format=torch.channels_last)
        before = {k: v.clone() for k, v in state.model.state_dict().items()}
        losses[name] = train_step(state.model, state, [], batch, SegmentationLoss(3.0, 1.0, device), 1e-3, device,
                                  ddp.DistContext(), dtype)
        weights[name] = state.model.state_dict()
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    name = "inc.0.weight"
    step = (weights["fp32"][name] - before[name]).abs().mean()
    assert (weights["bf16"][name] - weights["fp32"][name]).abs().mean() < 0.2 * step


def test_prefetcher_gives_each_step_its_own_batch():
    """Batches drawn ahead in the thread equal batches drawn in place, step by step, and a step
    asked out of turn is drawn at once."""
    calls = []

    def draw(step):
        calls.append(step)
        return batch_rng(7, 0, step).random(4)

    with Prefetcher(draw) as prefetcher:
        got = [prefetcher.get(s) for s in range(5)] + [prefetcher.get(2)]
    for s, batch in zip([0, 1, 2, 3, 4, 2], got):
        np.testing.assert_array_equal(batch, batch_rng(7, 0, s).random(4))
    assert calls[:2] == [0, 1]
    calls.clear()
    with Prefetcher(draw, background=False) as inline:  # as the loop runs on a CPU
        assert all(np.array_equal(inline.get(s), batch_rng(7, 0, s).random(4)) for s in (3, 4))
    assert calls == [3, 4]
    assert not np.array_equal(batch_rng(7, 0, 1).random(4), batch_rng(7, 1, 1).random(4))  # ranks differ


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, small_dsb):
    """Each step's batch comes from (seed, rank, step), so 2 steps + 2 resumed steps give the very
    weights of 4 steps in one go (constant learning rate, so the schedule is the same)."""
    from nucleiseg.training.loop import resume_path, train

    def cfg(steps):
        return TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=steps, val_every=2, seed=3,
                           schedule="constant", tune=False)

    train(small_dsb, tmp_path / "a.pt", cfg(4), torch.device("cpu"))
    train(small_dsb, tmp_path / "b.pt", cfg(2), torch.device("cpu"))
    train(small_dsb, tmp_path / "b.pt", cfg(4), torch.device("cpu"), resume=True)
    a = torch.load(resume_path(tmp_path / "a.pt"), weights_only=True)
    b = torch.load(resume_path(tmp_path / "b.pt"), weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)


def test_training_log_names_the_cpu_and_the_speed(tmp_path, small_dsb, caplog):
    from nucleiseg.training.loop import train

    cfg = TrainConfig(features=(4, 8), crop_size=32, batch_size=2, steps=2, val_every=2, tune=False)
    with caplog.at_level("INFO", logger="nucleiseg.training.loop"):
        result = train(small_dsb, tmp_path / "m.pt", cfg, torch.device("cpu"))
    text = caplog.text
    assert f"device cpu ({hardware.cpu_name()}, {torch.get_num_threads()} threads)" in text
    assert "steps/s) loss" in text
    assert result.history[-1]["steps_per_s"] > 0 and result.training["precision"] == "auto"
