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

from nucleiseg.batch import PredictOptions, predict_files
from nucleiseg.blockwise import block_edges, nuclei_cut_at_borders, predict_blockwise
from nucleiseg.checkpoint import load_model
from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.metrics import dsb_score, matching_table
from nucleiseg.predict import Predictor

CROWDED = "4596961c789d"  # 520 x 696 fluorescence, 133 nuclei


def _sample(prefix: str) -> Path:
    return next((bundled_samples_dir() / "images").glob(f"{prefix}*.png"))


@pytest.fixture(scope="module")
def crops_dataset(tmp_path_factory) -> Path:
    """A 'nucleiseg convert'-style folder of 12 crops of a real crowded image (not DSB2018 ids,
    so the stratified rule holds 2 of them out for validation)."""
    from nucleiseg.targets import class_map

    root = tmp_path_factory.mktemp("crops")
    (root / "train").mkdir()
    image = read_image(_sample(CROWDED))
    labels = read_label_image(bundled_samples_dir() / "labels" / f"{_sample(CROWDED).stem}.tif")
    k = 0
    for r in range(0, 520 - 96, 104):
        for c in range(0, 696 - 96, 200):
            lab = labels[r : r + 96, c : c + 96].astype(np.uint16)
            np.savez_compressed(root / "train" / f"crop{k:02d}.npz", image=image[r : r + 96, c : c + 96],
                                labels=lab, classes=class_map(lab, 2), border_width=np.int64(2))
            k += 1
    return root


def _torchrun(nproc: int, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "nucleiseg", "-q", "train", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_gloo_then_resume_on_one(tmp_path, crops_dataset):
    from nucleiseg.train import Predictor as TrainPredictor
    from nucleiseg.train import evaluate, load_samples, split_samples
    from nucleiseg.model import UNet, UNetConfig
    from nucleiseg.postprocess import WatershedParams

    out = tmp_path / "m.pt"
    common = ["--out", out, "--features", "4,8,16", "--crop-size", 48, "--batch-size", 2, "--device", "cpu",
              "--no-tune"]
    proc = _torchrun(2, crops_dataset, *common, "--steps", 4, "--val-every", 2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (DistributedDataParallel, batch 2 each)" in proc.stderr
    assert proc.stdout.count("wrote") == 1  # rank 0 alone reports
    model, config = load_model(out)
    assert config["training"]["processes"] == 2
    labels = Predictor(model, config, torch.device("cpu")).predict(read_image(_sample(CROWDED)))
    assert labels.shape == (520, 696)
    state = torch.load(tmp_path / "m.pt.resume.pt", weights_only=True)
    assert state["step"] == 4 and "module." not in next(iter(state["model"]))
    # the validation score gathered from both ranks is the score of rank 0's weights on all images
    _, val = split_samples(load_samples(crops_dataset, 2, 1.0, 99.8))
    assert len(val) == 2
    net = UNet(UNetConfig(1, 3, (4, 8, 16)))
    net.load_state_dict(state["model"])
    score = evaluate(TrainPredictor(net, config, torch.device("cpu"), channels_last=False), val, WatershedParams())[0]
    assert state["history"][-1]["val_score"] == pytest.approx(score, abs=1e-12)
    # a 2-process checkpoint resumes in one process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nucleiseg", "-q", "train", str(crops_dataset), *map(str, common),
                           "--steps", "6", "--val-every", "2", "--resume"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 4" in proc.stderr
    assert torch.load(tmp_path / "m.pt.resume.pt", weights_only=True)["step"] == 6


def test_rank_batches_are_disjoint_shares_of_one_weighted_draw():
    from nucleiseg.ddp import DistContext, RankBatches

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


def test_local_cluster_equals_single_process(tmp_path, reference_outputs):
    from nucleiseg.cluster import connect, predict_on_cluster

    ws = load_model(None)[1]["watershed"]
    with connect(workers=2) as client:
        results = predict_on_cluster(client, [bundled_samples_dir() / "images"], tmp_path / "out", None, ws,
                                     PredictOptions(), rle_path=tmp_path / "sub.csv", device="cpu")
    ids = sorted(p.stem for p in (bundled_samples_dir() / "images").glob("*.png"))
    assert sorted(r.image_id for r in results if r.status == "done") == ids
    _same_outputs(tmp_path / "out", reference_outputs, ids)
    assert (tmp_path / "sub.csv").read_text() == (reference_outputs / "sub.csv").read_text()


def test_killed_worker_loses_no_image(tmp_path, reference_outputs):
    from nucleiseg.cluster import connect, predict_on_cluster

    src = tmp_path / "in"
    src.mkdir()
    copies = {}
    for k in range(3):  # 24 images, so the kill lands mid-run
        for p in (bundled_samples_dir() / "images").glob("*.png"):
            shutil.copy(p, src / f"c{k}_{p.name}")
            copies[f"c{k}_{p.stem}"] = p.stem
    out = tmp_path / "out"
    ws = load_model(None)[1]["watershed"]
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
        results = predict_on_cluster(client, [src], out, None, ws, PredictOptions(), device="cpu")
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
    whole = predictor.predict(mosaic)
    blocks, stats = predict_blockwise(predictor, mosaic, block_size=384, halo=64)
    assert stats["blocks"] == 12 and stats["truncated"] == 0
    assert dsb_score(whole, blocks) >= 0.99
    # no nucleus cut in two: every whole-image nucleus crossing a block border is one block-wise
    # nucleus covering at least 90% of it
    rows, cols = block_edges(1040, 384, 64), block_edges(1392, 384, 64)
    crossing, cut = nuclei_cut_at_borders(whole, blocks, rows, cols)
    assert crossing > 30 and cut == 0
    assert matching_table(whole, blocks)[0].fn <= 2  # IoU > 0.5


def test_cluster_reports_a_bad_file_and_goes_on(tmp_path):
    from nucleiseg.cluster import connect, predict_on_cluster

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(_sample("1c681dfa5cf7"), src / "good.png")
    (src / "empty.png").write_bytes(b"")
    with connect(workers=1) as client:
        results = predict_on_cluster(client, [src], tmp_path / "out", None, load_model(None)[1]["watershed"],
                                     PredictOptions(measure=True), rle_path=tmp_path / "sub.csv", device="cpu")
    by_id = {r.image_id: r for r in results}
    assert by_id["good"].status == "done" and by_id["good"].n_nuclei > 10
    assert by_id["empty"].status == "failed" and "file is empty" in by_id["empty"].error
    assert (tmp_path / "out" / "good.tif").is_file() and not (tmp_path / "out" / "empty.tif").exists()
    assert (tmp_path / "sub.csv").read_text().count("good,") == by_id["good"].n_nuclei
    assert "good" in (tmp_path / "out" / "summary.csv").read_text()
