"""Prediction spread over a Dask cluster (``dask.distributed``): ``predict --workers N`` or
``predict --scheduler ADDRESS``. Needs the ``cluster`` extra (``pip install 'nucleiseg[cluster]'``).

Each worker loads the model once, through a worker plugin registered with the client (a worker
that restarts, e.g. after being killed, runs the plugin's ``setup`` again). Every image is one
task, keyed by its ImageId, that reads the image, predicts it and writes its outputs to OUT with
:func:`nucleiseg.inference.batch.predict_one` (each file under a temporary name, then renamed), so OUT
must be storage every worker and the client share. The task returns only a small
:class:`~nucleiseg.inference.batch.PredictResult`; progress and failures come back to the client as tasks
finish. When a worker dies, Dask's scheduler runs its unfinished tasks on another worker
(``distributed.scheduler.allowed-failures`` times at most); since each output appears by an
atomic rename, a task run twice leaves one complete file, never a partial or a duplicate.
The client then writes the Kaggle CSV (reading the label images back from OUT) and
``summary.csv``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

from ..data.images import read_label_image
from ..data.rle import write_submission
from ..errors import MissingDependencyError, NucleisegError
from ..io import output_paths
from ..progress import Progress, no_progress
from .batch import PredictResult, finish_summary, predict_one, unique_inputs
from .predictor import PredictOptions
from .tiling import DEFAULT_TILE_SIZE

try:
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:
    raise MissingDependencyError("prediction on a Dask cluster needs dask and distributed: "
                                 "pip install 'nucleiseg[cluster]'") from None

PLUGIN_NAME = "nucleiseg-model"


class ModelPlugin(WorkerPlugin):
    """Worker plugin holding one
    :class:`~nucleiseg.inference.predictor.Predictor` per worker process."""

    name = PLUGIN_NAME

    def __init__(self, model: str | None, device: str = "auto", tile_size: int = DEFAULT_TILE_SIZE,
                 compile: bool = False, backend: str = "torch"):
        self.model, self.device, self.tile_size, self.compile = model, device, tile_size, compile
        self.backend = backend
        self.predictor = None

    def setup(self, worker=None) -> None:
        from .predictor import load_model

        self.predictor = load_model(self.model, self.device, self.backend, tile_size=self.tile_size,
                                       compile=self.compile)

    def teardown(self, worker=None) -> None:
        self.predictor = None


def _worker_predict(image_id: str, path: str, out: str, options: PredictOptions) -> PredictResult:
    """One task: predict one image on this worker with the plugin's model."""
    predictor = distributed.get_worker().plugins[PLUGIN_NAME].predictor
    result, _ = predict_one(predictor, image_id, Path(path), Path(out), options)
    return result


class _Counted:
    """An iterator with a length, for progress bars over ``as_completed``."""

    def __init__(self, it, n: int):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self) -> int:
        return self.n


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1) -> Iterator:
    """A ``distributed.Client``, closed on exit: to the scheduler at ``scheduler``, or to a new
    ``LocalCluster`` (also closed on exit) of ``workers`` processes with ``threads_per_worker``
    threads each (one task at a time per worker; Dask sets OMP_NUM_THREADS to match, so PyTorch
    uses that many threads).

    Raises
    ------
    NucleisegError
        when neither is given, the scheduler cannot be reached, or dask / distributed are not
        installed (the ``cluster`` extra).
    """
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except OSError as exc:
            raise NucleisegError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise NucleisegError("give --workers N (N >= 1) or --scheduler ADDRESS")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def predict_on_cluster(client, inputs: list[Path], out: Path, model: str | os.PathLike | None,
                       options: PredictOptions | None = None, rle_path: Path | None = None, device: str = "auto",
                       tile_size: int = DEFAULT_TILE_SIZE, compile: bool = False,
                       progress: Progress = no_progress, backend: str = "torch") -> list[PredictResult]:
    """Predict every image of ``inputs`` on the workers of ``client`` into ``out``.

    ``model``: model file path (None = the bundled model), read by each worker with ``device``,
    ``tile_size``, ``compile`` and ``backend`` ("torch" or "onnx", as
    :func:`~nucleiseg.inference.predictor.load_model`); ``options`` as for
    :func:`~nucleiseg.inference.batch.predict_files` (watershed None: the model's values).
    Returns one result per input image, in input order; a failed image is reported, never
    retried by hand (a *lost worker's* tasks are rerun by Dask itself).
    """
    options = options or PredictOptions()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo, repeated = unique_inputs(inputs)
    client.register_plugin(ModelPlugin(str(Path(model).resolve()) if model else None, device, tile_size, compile,
                                       backend))
    run = uuid.uuid4().hex[:8]  # keys unique to this run on a shared scheduler
    futures = {}
    for image_id, path in todo:
        fut = client.submit(_worker_predict, image_id, str(Path(path).resolve()), str(out), options,
                            key=f"nucleiseg-predict-{run}-{image_id}", retries=0)
        futures[fut] = image_id
    by_id: dict[str, PredictResult] = {}
    finished = _Counted(distributed.as_completed(futures), len(futures))
    for fut in progress(finished, len(futures), "predict (Dask)"):
        image_id = futures[fut]
        try:
            by_id[image_id] = fut.result()
        except Exception as exc:  # the task itself failed (e.g. killed worker beyond allowed failures)
            by_id[image_id] = PredictResult(image_id, "failed", error=f"{type(exc).__name__}: {exc}")
    results = [by_id[i] for i, _ in todo] + repeated
    if rle_path is not None:
        done = [r.image_id for r in results if r.status in ("done", "skipped")]
        write_submission(rle_path, ((i, read_label_image(output_paths(out, i, options.label_format).labels))
                                    for i in done))
    finish_summary(out, results, options)
    return results
