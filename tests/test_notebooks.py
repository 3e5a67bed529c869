"""The notebooks run top to bottom (small settings), so they never rot, and what they print is
checked against the same numbers computed here."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOKS = {p.stem: p for p in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))}


def run_notebook(name: str, cwd: Path) -> str:
    """Execute a notebook in ``cwd``; return everything its cells printed. Fails on any error."""
    nb = nbformat.read(NOTEBOOKS[name], as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_quickstart(tmp_path, sample_ids, sample_labels):
    from nucleiseg import dsb_score, load_model, read_image
    from nucleiseg.data.sources import bundled_samples_dir

    printed = run_notebook("01_quickstart", tmp_path)
    image_id = sample_ids[5]  # the notebook's choice
    labels = load_model(device="cpu").predict(read_image(bundled_samples_dir() / "images" / f"{image_id}.png"))
    truth = sample_labels[image_id]
    assert f"{labels.max()} nuclei predicted, {len(np.unique(truth)) - 1} in the ground truth" in printed
    assert f"DSB score {round(dsb_score(truth, labels), 4)}" in printed
    assert printed.count("IoU > ") == 10


def test_targets_and_weight_maps(tmp_path):
    printed = run_notebook("02_targets_and_weight_maps", tmp_path)
    difference = float(re.search(r"max \|difference\| ([0-9.e+-]+);", printed).group(1))
    assert difference < 1e-5  # our weight map equals the per-nucleus reference


def test_train_on_dsb2018(tmp_path):
    from nucleiseg.model.file import read_model_file

    printed = run_notebook("03_train_on_dsb2018", tmp_path)
    config = read_model_file(tmp_path / "work" / "model.pt").config
    assert config.training["steps_done"] == 6 and len(config.validation.ids) == 1
    assert f"validation DSB {config.validation.score:.4f} on 1 image(s)" in printed
    match = re.search(r"labels \((\d+), (\d+)\) for an image of \((\d+), (\d+)\)", printed)
    assert match and match.group(1, 2) == match.group(3, 4)


def test_every_notebook_is_tested():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_") and name != "test_every_notebook_is_tested"}
    assert {re.sub(r"^\d+_", "", n) for n in NOTEBOOKS} == {"quickstart", "targets_and_weight_maps", "train_on_dsb2018"} == tested


pytestmark = pytest.mark.slow  # each test starts a Jupyter kernel
