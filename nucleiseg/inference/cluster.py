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

A whole-slide image (:func:`~nucleiseg.data.slides.is_slide`) is spread over the workers in
regions. One task plans it (:func:`~nucleiseg.inference.slide.plan_slide`: normalisation,
tissue mask, diameter and scale, from the thumbnail and one tile) and lists its blocks with
tissue; each region task then segments :data:`REGION_BLOCKS` of those blocks into the slide's
block cache in OUT (:func:`~nucleiseg.inference.slide.predict_slide_blocks`, each block written
atomically); when all are done, one task predicts the slide as a single process would, with the
plan task's plan (not planned again), reading every block back from the cache (a block missing
there, from a failed region, is predicted then), and writes the outputs. The nuclei are therefore
those of one process, label for label.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

from ..data.images import read_label_image
from ..data.rle import write_submission
from ..data.slides import is_slide
from ..errors import MissingDependencyError, NucleisegError
from ..progress import Progress, no_progress
from .batch import PredictResult, finish_summary, predict_one, unique_inputs, wanted_outputs
from .predictor import PredictOptions

try:
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:
    raise MissingDependencyError("prediction on a Dask cluster needs dask and distributed: "
                                 "pip install 'nucleiseg[cluster]'") from None

PLUGIN_NAME = "nucleiseg-model"
#: Blocks of a slide per region task: small enough to spread a slide over many workers and to
#: lose little when a worker dies, large enough that a task outlasts Dask's overhead (a 2048 px
#: block takes seconds).
REGION_BLOCKS = 4


class ModelPlugin(WorkerPlugin):
    """Worker plugin holding one
    :class:`~nucleiseg.inference.predictor.Predictor` per worker process."""

    name = PLUGIN_NAME

    def __init__(self, model: str | None, device: str = "auto", tile_size: int | None = None,
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


def _predictor():
    return distributed.get_worker().plugins[PLUGIN_NAME].predictor


def _worker_predict(image_id: str, path: str, out: str, options: PredictOptions,
                    slide_plan=None) -> PredictResult:
    """One task: predict one image on this worker with the plugin's model (a slide reading back
    the plan task's ``slide_plan`` and the blocks its regions left in the block cache)."""
    result, _ = predict_one(_predictor(), image_id, Path(path), Path(out), options, slide_plan=slide_plan)
    return result


def _worker_slide_plan(image_id: str, path: str, out: str, options: PredictOptions):
    """One task: (:class:`~nucleiseg.inference.slide.SlidePlan`, the blocks holding tissue) of a
    slide; starts its block cache (emptied unless ``options.skip_existing``)."""
    from ..data.slides import open_slide
    from .blockwise import BlockCache
    from .slide import block_cache_folder, plan_slide, slide_blocks, slide_predictor

    predictor = slide_predictor(_predictor())
    with open_slide(Path(path)) as slide:
        plan, _ = plan_slide(predictor, slide, options)
        blocks = slide_blocks(predictor, slide, options, plan)
    folder = block_cache_folder(options.paths(Path(out), image_id))
    BlockCache(folder, plan.key, fresh=not options.skip_existing)
    return plan, folder, blocks


def _worker_slide_region(path: str, options: PredictOptions, plan, folder: Path,
                         blocks: list[tuple[int, int]]) -> list[str]:
    """One task: blocks ``blocks`` of a slide into its block cache (unreadable ones named)."""
    from ..data.slides import open_slide
    from .slide import predict_slide_blocks

    with open_slide(Path(path)) as slide:
        return predict_slide_blocks(_predictor(), slide, options, plan, folder, blocks)


def _spread_slide(client, run: str, image_id: str, path: Path, out: Path, options: PredictOptions,
                  progress: Progress):
    """Predict the slide at ``path`` in regions over the workers, then submit the task that
    writes its outputs from their blocks; returns that task's future."""
    planned = client.submit(_worker_slide_plan, image_id, str(path), str(out), options,
                            key=f"nucleiseg-plan-{run}-{image_id}", retries=0)
    try:
        plan, folder, blocks = planned.result()
    except Exception:  # not a readable slide: the last task reports why
        plan, folder, blocks = None, None, []
    regions = [client.submit(_worker_slide_region, str(path), options, plan, folder, blocks[k : k + REGION_BLOCKS],
                             key=f"nucleiseg-region-{run}-{image_id}-{k // REGION_BLOCKS}", retries=0)
               for k in range(0, len(blocks), REGION_BLOCKS)]
    for _ in progress(_Counted(distributed.as_completed(regions), len(regions)), len(regions),
                      f"{image_id} regions (Dask)"):
        pass  # a failed region's blocks are predicted by the last task
    return client.submit(_worker_predict, image_id, str(path), str(out), options, plan,
                         key=f"nucleiseg-predict-{run}-{image_id}", retries=0)


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
                       tile_size: int | None = None, compile: bool = False,
                       progress: Progress = no_progress, backend: str = "torch") -> list[PredictResult]:
    """Predict every image of ``inputs`` on the workers of ``client`` into ``out``.

    ``model``: model file path (None = the bundled model), read by each worker with ``device``,
    ``tile_size``, ``compile`` and ``backend`` ("torch" or "onnx", as
    :func:`~nucleiseg.inference.predictor.load_model`); ``options`` as for
    :func:`~nucleiseg.inference.batch.predict_files` (watershed None: the model's values).
    A whole-slide image is spread over the workers in regions of :data:`REGION_BLOCKS` blocks
    (see the module docstring), with the nuclei of one process; Dask's workers are daemonic
    processes, so its tasks start no worker processes of their own
    (:func:`~nucleiseg.inference.blockwise.postprocess_processes`): the cluster is the parallelism.
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
    futures, slides = {}, []
    for image_id, path in todo:
        path = Path(path).resolve()
        if is_slide(path) and not (options.skip_existing and all(p.is_file() for p in wanted_outputs(out, image_id,
                                                                                                      options))):
            slides.append((image_id, path))
            continue
        fut = client.submit(_worker_predict, image_id, str(path), str(out), options,
                            key=f"nucleiseg-predict-{run}-{image_id}", retries=0)
        futures[fut] = image_id
    for image_id, path in slides:  # the images above run meanwhile
        futures[_spread_slide(client, run, image_id, path, out, options, progress)] = image_id
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
        write_submission(rle_path, ((i, read_label_image(options.paths(out, i).labels))
                                    for i in done))
    finish_summary(out, results, options)
    return results
