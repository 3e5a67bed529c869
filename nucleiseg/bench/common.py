"""Shared by the benchmarks: the machine line, best-of timing, JSON output, and the labeled
images a benchmark runs on."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..data.layouts import open_collection
from ..data.sources import LabelSource, bundled_samples_dir
from ..hardware import cpu_name


def machine() -> str:
    """One line naming this machine: CPU model, cores used, Python and library versions."""
    import numba
    import scipy

    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores (numba threads {numba.get_num_threads()}), Python "
            f"{platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, numba {numba.__version__}")


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


class LabeledImages(NamedTuple):
    """Label images by ImageId, and the path of each one's image when the source has images."""

    labels: LabelSource
    image_path: Callable[[str], Path | None]


def labeled_images(root: str | os.PathLike | None = None) -> LabeledImages:
    """The label images (and images) a benchmark runs on: any labeled collection
    (:mod:`~nucleiseg.data.layouts`: DSB2018, images/ + masks/, Cellpose, Aperio XML) or any
    other :class:`~nucleiseg.data.sources.LabelSource` (labels only). None: the bundled samples."""
    root = Path(root) if root is not None else bundled_samples_dir()
    collection = open_collection(root)
    return LabeledImages(LabelSource(root), collection.image_path if collection else (lambda image_id: None))


def device_name(device) -> str:
    """'cpu', or 'cuda (NVIDIA H100 80GB HBM3)': the GPU named, so every GPU figure says where it came from."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def to_json(result: dict) -> str:
    """Results as JSON; NumPy scalars and arrays (e.g. from StarDist's counts) become plain numbers."""

    def plain(value):
        if isinstance(value, (np.generic, np.ndarray)):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return json.dumps(result, indent=1, default=plain)


#: The validation sets the benchmarks' studies choose on (never the test set).
VALIDATION_SETS = ("DSB2018 validation", "MoNuSeg 2018 validation")


def validation_study_args(description: str):
    """The command line of a validation study in benchmarks/: ``--dsb2018`` (a stage1_train
    folder), ``--monuseg`` (MoNuSeg 2018 with train/ and test/), ``--model`` (None: the bundled
    model), ``--json`` (a file for the results); parsed from ``sys.argv``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    for name in ("--dsb2018", "--monuseg", "--model", "--json"):
        parser.add_argument(name)
    return parser.parse_args()


def validation_items(dsb2018: str | os.PathLike | None, monuseg: str | os.PathLike | None):
    """(set name, labeled item) of every image of :data:`VALIDATION_SETS` found under the folders
    (:func:`nucleiseg.evaluation.evaluation_sets`), in the sets' order."""
    from ..evaluation import evaluation_sets

    for s in evaluation_sets(dsb2018, monuseg):
        if s.name in VALIDATION_SETS:
            for item in s.collection.items(s.image_ids):
                yield s.name, item
