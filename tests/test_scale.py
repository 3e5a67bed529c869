"""Scale-out: 2-process DDP training with gloo, Dask cluster prediction (with a worker killed
mid-run), and block-wise prediction of a mosaic against whole-image prediction."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.inference.batch import predict_files
from nucleiseg.inference.blockwise import block_edges, nuclei_cut_at_borders, predict_blockwise
from nucleiseg.inference.predictor import PredictOptions, Predictor
from nucleiseg.metrics import dsb_score, matching_table
from nucleiseg.model.file import read_model_file

CROWDED = "4596961c789d"  # 520 x 696 fluorescence, 133 nuclei


def _sample(prefix: str) -> Path:
    return next((bundled_samples_dir() / "images").glob(f"{prefix}*.png"))


def _torchrun(nproc: int, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "nucleiseg", "-q", "train", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ddp_two_processes_gloo_then_resume_on_one(tmp_path, crops_dataset):
    """Two gloo processes with an EMA of the weights: the validation score gathered from both ranks
    is the score of the saved (rank 0's) averaged weights on all validation images; then the
    2-process state resumes in one process."""
    from nucleiseg.model.config import UNetConfig
    from nucleiseg.model.unet import UNet
    from nucleiseg.postprocess import WatershedParams
    from nucleiseg.training.samples import load_samples, split_samples
    from nucleiseg.training.validation import image_scores

    out = tmp_path / "m.pt"
    common = ["--out", out, "--features", "4,8,16", "--crop-size", 48, "--batch-size", 4, "--device", "cpu",
              "--no-tune", "--lr", 0.01, "--ema", 0.9]
    proc = _torchrun(2, crops_dataset, *common, "--steps", 100, "--val-every", 100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (DistributedDataParallel, batch 4 each)" in proc.stderr
    assert proc.stdout.count("wrote") == 1  # rank 0 alone reports
    model, config = read_model_file(out)
    assert config.training["processes"] == 2 and config.training["ema"] == 0.9
    labels = Predictor(model, config, torch.device("cpu")).predict(read_image(_sample(CROWDED)))
    assert labels.shape == (520, 696)
    state = torch.load(tmp_path / "m.pt.resume.pt", weights_only=True)
    assert state["step"] == 100 and "module." not in next(iter(state["model"]))
    _, val = split_samples(load_samples(crops_dataset, 2, 1.0, 99.8))
    assert len(val) == 2
    net = UNet(UNetConfig(1, 3, (4, 8, 16)))
    net.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")})
    predictor = Predictor(net, config, torch.device("cpu"), channels_last=False)
    scores = image_scores((predictor.probabilities_of_normalized(s.image) for s in val), val, WatershedParams())
    assert min(v for *_, v in scores) > 0  # both ranks' images have a score that depends on the weights
    assert state["history"][-1]["val_score"] == pytest.approx(np.mean([v for *_, v in scores]), abs=1e-12)
    # a 2-process checkpoint resumes in one process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "-q", "train", str(crops_dataset), *map(str, common),
                           "--steps", "102", "--val-every", "2", "--resume"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 100" in proc.stderr
    assert torch.load(tmp_path / "m.pt.resume.pt", weights_only=True)["step"] == 102


def test_rank_batches_are_disjoint_shares_of_one_weighted_draw():
    from nucleiseg.training.ddp import DistContext, RankBatches

    weights = np.array([0.1, 0.2, 0.3, 0.4])
    ranks = [RankBatches(weights, 3, DistContext(r, 2, r), seed=5) for r in range(2)]
    assert ranks[0].steps_per_epoch == 1
    for step in range(3):
        a, b = ranks[0](step), ranks[1](step)
        assert a.shape == b.shape == (3,)
        draws = np.random.default_rng([5, step]).choice(4, size=6, p=weights)
        assert sorted(np.concatenate([a, b])) == sorted(draws)  # the two shares make up the epoch's draw
    again = RankBatches(weights, 3, DistContext(1, 2, 1), seed=5)
    np.testing.assert_array_equal(again(2), ranks[1](2))  # depends only on (seed, step, rank, world)


@pytest.fixture(scope="module")
def reference_outputs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    predict_files([bundled_samples_dir() / "images"], out, Predictor.from_file(device="cpu"),
                  rle_path=out / "sub.csv")
    return out


def _same_outputs(out: Path, ref: Path, ids: list[str], name_of=lambda i: i) -> None:
    for image_id in ids:
        np.testing.assert_array_equal(read_label_image(out / f"{image_id}.tif"),
                                      read_label_image(ref / f"{name_of(image_id)}.tif"))


@pytest.mark.slow
def test_local_cluster_equals_single_process(tmp_path, reference_outputs):
    from nucleiseg.inference.cluster import connect, predict_on_cluster

    with connect(workers=2) as client:
        results = predict_on_cluster(client, [bundled_samples_dir() / "images"], tmp_path / "out", None,
                                     PredictOptions(), rle_path=tmp_path / "sub.csv", device="cpu")
    ids = sorted(p.stem for p in (bundled_samples_dir() / "images").glob("*.png"))
    assert sorted(r.image_id for r in results if r.status == "done") == ids
    _same_outputs(tmp_path / "out", reference_outputs, ids)
    assert (tmp_path / "sub.csv").read_text() == (reference_outputs / "sub.csv").read_text()


@pytest.mark.slow
def test_killed_worker_loses_no_image(tmp_path, reference_outputs):
    from nucleiseg.inference.cluster import connect, predict_on_cluster

    src = tmp_path / "in"
    src.mkdir()
    copies = {}
    for k in range(3):  # 24 images, so the kill lands mid-run
        for p in (bundled_samples_dir() / "images").glob("*.png"):
            shutil.copy(p, src / f"c{k}_{p.name}")
            copies[f"c{k}_{p.stem}"] = p.stem
    out = tmp_path / "out"
    killed = []
    with connect(workers=2) as client:
        pids = client.run(os.getpid)

        def kill_one_after_first_output():
            deadline = time.time() + 120
            while time.time() < deadline and not any(out.glob("c*.tif")):
                time.sleep(0.05)
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        killer = threading.Thread(target=kill_one_after_first_output)
        killer.start()
        results = predict_on_cluster(client, [src], out, None, PredictOptions(), device="cpu")
        killer.join()
    assert killed
    assert sorted(r.image_id for r in results if r.status == "done") == sorted(copies)
    _same_outputs(out, reference_outputs, sorted(copies), copies.get)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == sorted([f"{i}.tif" for i in copies] + [f"{i}_overlay.png" for i in copies])


def test_blockwise_mosaic_equals_whole_image():
    image = read_image(_sample(CROWDED))
    mosaic = np.concatenate([np.concatenate([image, image[:, ::-1]], 1)] * 2, 0)  # 1040 x 1392, 532 nuclei
    predictor = Predictor.from_file(device="cpu")
    whole = predictor.predict(mosaic, PredictOptions(diameter=None))  # blocks at the original scale, as below
    blocks, stats = predict_blockwise(predictor, mosaic, block_size=384, halo=64)
    assert stats.blocks == 12 and stats.truncated == 0
    present = np.unique(blocks[blocks > 0])
    np.testing.assert_array_equal(present, np.arange(1, stats.nuclei + 1))  # 1..N, as predict() promises
    assert dsb_score(whole, blocks) >= 0.99
    # no nucleus cut in two: every whole-image nucleus crossing a block border is one block-wise
    # nucleus covering at least 90% of it
    rows, cols = block_edges(1040, 384, 64), block_edges(1392, 384, 64)
    crossing, cut = nuclei_cut_at_borders(whole, blocks, rows, cols)
    assert crossing > 30 and cut == 0
    assert matching_table(whole, blocks)[0].fn <= 2  # IoU > 0.5


@pytest.mark.slow
def test_cluster_reports_a_bad_file_and_goes_on(tmp_path):
    from nucleiseg.inference.cluster import connect, predict_on_cluster

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(_sample("1c681dfa5cf7"), src / "good.png")
    (src / "empty.png").write_bytes(b"")
    with connect(workers=1) as client:
        results = predict_on_cluster(client, [src], tmp_path / "out", None, PredictOptions(measure=True),
                                     rle_path=tmp_path / "sub.csv", device="cpu")
    by_id = {r.image_id: r for r in results}
    assert by_id["good"].status == "done" and by_id["good"].n_nuclei > 10
    assert by_id["empty"].status == "failed" and "file is empty" in by_id["empty"].error
    assert (tmp_path / "out" / "good.tif").is_file() and not (tmp_path / "out" / "empty.tif").exists()
    assert (tmp_path / "sub.csv").read_text().count("good,") == by_id["good"].n_nuclei
    assert "good" in (tmp_path / "out" / "summary.csv").read_text()


VALIDATE_ON_TWO_RANKS = """
import json, sys
import torch
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.data.split import modality
from nucleiseg.inference.predictor import Predictor
from nucleiseg.postprocess import WatershedParams
from nucleiseg.targets.border import class_map
from nucleiseg.training import ddp
from nucleiseg.training.samples import Sample
from nucleiseg.training.validation import validate

ctx, device = ddp.init(torch.device("cpu"))
predictor = Predictor.from_file(None, device, channels_last=False)
if ctx.rank == 1:  # statistics of this rank's own batches, as a weight average has them
    for module in predictor.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean += 3.0
samples = []
for image_id in sys.argv[1:]:
    image = read_image(bundled_samples_dir() / "images" / f"{image_id}.png")
    labels = read_label_image(bundled_samples_dir() / "labels" / f"{image_id}.tif")
    samples.append(Sample(image_id, predictor.normalize(image), class_map(labels), labels, modality(image)))
print(json.dumps({"rank": ctx.rank, "score": validate(predictor, samples, WatershedParams(), ctx).score}))
ddp.shutdown(ctx)
"""


@pytest.mark.slow
def test_validation_scores_rank_0s_network_on_every_rank(tmp_path, sample_ids):
    """Two gloo processes whose networks differ in their BatchNorm statistics: both return the
    single-process score of rank 0's network over all the images (each rank scored half)."""
    import json
    import re

    from nucleiseg.data.split import modality
    from nucleiseg.postprocess import WatershedParams
    from nucleiseg.targets.border import class_map
    from nucleiseg.training.samples import Sample
    from nucleiseg.training.validation import validate

    ids = [i for i in sample_ids if i.startswith(("1c681dfa5cf7", "0a7d30b25235"))]
    script = tmp_path / "validate.py"
    script.write_text(VALIDATE_ON_TWO_RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *ids], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = [json.loads(m)["score"] for m in re.findall(r"\{[^}]*\}", proc.stdout)]  # ranks may share a line
    predictor = Predictor.from_file(None, "cpu", channels_last=False)
    samples = []
    for image_id in ids:
        image = read_image(bundled_samples_dir() / "images" / f"{image_id}.png")
        labels = read_label_image(bundled_samples_dir() / "labels" / f"{image_id}.tif")
        samples.append(Sample(image_id, predictor.normalize(image), class_map(labels), labels, modality(image)))
    expected = validate(predictor, samples, WatershedParams()).score
    assert expected > 0.3
    assert scores == pytest.approx([expected, expected], abs=1e-12)


def test_blockwise_rescaled_equals_whole_image_rescaled():
    """With a diameter that halves the image, block-wise prediction (each block rescaled) agrees
    with whole-image prediction at the same scale."""
    image = read_image(_sample(CROWDED))
    mosaic = np.concatenate([np.concatenate([image, image[:, ::-1]], 1)] * 2, 0)  # 1040 x 1392
    whole_predictor = Predictor.from_file(device="cpu", tile_size=1424)
    diameter = 2 * whole_predictor.config.nucleus_diameter  # nuclei said to be twice the training size
    whole = whole_predictor.segment(mosaic, PredictOptions(diameter=diameter))
    blocks = Predictor.from_file(device="cpu").segment(mosaic, PredictOptions(diameter=diameter, block_size=400))
    assert whole.scale == blocks.scale == pytest.approx(0.5, abs=0.01)
    assert blocks.labels.shape == whole.labels.shape == mosaic.shape[:2]
    assert dsb_score(whole.labels, blocks.labels) >= 0.95
