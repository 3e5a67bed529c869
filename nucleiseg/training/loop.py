"""``nucleiseg train``: fit the U-Net, validating with the DSB score, and tune its watershed.

The pipeline: load the samples and hold out the validation split
(:mod:`~nucleiseg.training.samples`), build or resume the :class:`~nucleiseg.training.state.TrainingState`,
then repeat :func:`train_step` until the :class:`~nucleiseg.training.state.Budget` is used,
validating every ``val_every`` steps (:func:`~nucleiseg.training.validation.validate`). The best
checkpoint by validation score is written to ``out``; a resumable state to ``<out>.resume.pt`` and
the loss / validation-score curve to ``<out>.curve.png`` at every validation. At the end the
watershed values are tuned on the validation split (:func:`~nucleiseg.training.validation.tune_model`).
Progress goes to the module's logger (``logging.getLogger("nucleiseg.training.loop")``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import NucleisegError
from ..hardware import autocast_dtype, describe
from ..labels import median_diameter
from ..inference.predictor import Predictor, choose_device
from ..model.config import ModelConfig, NormalizationConfig, ValidationRecord
from ..model.file import save_model_file
from ..postprocess import WatershedParams
from ..progress import Progress, no_progress
from . import ddp
from .augment import sample_batch
from .config import TrainConfig
from .prefetch import Prefetcher, batch_rng
from .loss import SegmentationLoss
from .samples import Sample, add_weight_maps, at_diameter, load_collections, sampling_weights
from .state import Budget, Clock, TrainingState
from .validation import ValidationScore, collection_scores, tune_model, validate

logger = logging.getLogger(__name__)


class TrainingInterrupted(NucleisegError):
    """Training stopped by SIGINT or SIGTERM after saving a resumable state."""


def resume_path(out: Path) -> Path:
    """Where the resumable state of a run writing ``out`` lives: ``<out>.resume.pt``."""
    return out.with_name(out.name + ".resume.pt")


@contextlib.contextmanager
def stop_requested() -> Iterator[list[str]]:
    """While active, SIGINT and SIGTERM only append their name to the yielded list (checked once
    per step by the training loop, which then saves its state and stops). Outside the main thread
    signals cannot be caught, and the list stays empty."""
    stop: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        stop.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


Batch = tuple[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray]


def draw_batch(train_set: list[Sample], weights: np.ndarray, cfg: TrainConfig, rng: np.random.Generator,
               idx: np.ndarray | None = None) -> Batch:
    """The augmented crops of one step (:func:`~nucleiseg.training.augment.sample_batch`): images
    ``idx``, or drawn with ``weights``; (inputs, classes, pixel weights or None, image indices)."""
    return sample_batch([s.image for s in train_set], [s.classes for s in train_set], weights, cfg.batch_size,
                        cfg.crop_size, rng, [s.pixel_weights for s in train_set] if cfg.weight_map else None,
                        cfg.augment, idx=idx, labels=[s.labels for s in train_set] if cfg.nucleus_dimming else None,
                        nucleus_dimming=cfg.nucleus_dimming)


def train_step(net: torch.nn.Module, state: TrainingState, train_set: list[Sample], batch: Batch,
               loss_fn: SegmentationLoss, lr: float, device: torch.device, ctx: ddp.DistContext,
               dtype: torch.dtype | None = None, channels_last: bool = True) -> float:
    """One optimiser step on ``batch`` (:func:`draw_batch`), the forward pass in ``dtype``
    autocast (None: float32), the input in channels-last layout unless ``channels_last`` is
    False; updates the weight average. Returns the loss.

    Raises
    ------
    NucleisegError
        on a non-finite loss (on any rank), naming the batch's images.
    """
    net.train()
    xs, ys, ws, idx = batch
    x = torch.from_numpy(xs).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(ys).to(device, non_blocking=True)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = net(x)
    loss = loss_fn(logits, y, None if ws is None else torch.from_numpy(ws).to(device, non_blocking=True))
    finite = bool(torch.isfinite(loss))
    if ddp.any_rank(not finite, ctx, device):
        names = ", ".join(train_set[i].image_id for i in idx) if not finite else "of another process"
        ddp.shutdown(ctx)
        raise NucleisegError(f"non-finite loss at step {state.step} on images {names}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    return loss.item()


def _checkpoint(state: TrainingState, predictor: Predictor, val_set: list[Sample], out: Path,
                ctx: ddp.DistContext, minutes: float, steps_per_s: float, log: Callable[[str], None]) -> None:
    """Validate the weights in ``predictor`` (all ranks), record the score and the training speed
    since the last validation (``steps_per_s``), keep the checkpoint if it is the best, and save
    the resumable state and the training curve (rank 0)."""
    from ..figures import training_curve

    predictor.model.eval()
    score, per_mod, per_collection = validate(predictor, val_set, WatershedParams(), ctx)  # rank 0's network, on every rank
    per_collection = collection_scores(ValidationScore(score, per_mod, per_collection))
    state.history.append({"step": state.step, "minutes": minutes, "loss": state.loss_avg, "val_score": score,
                          "val_per_modality": per_mod, "steps_per_s": steps_per_s}
                         | ({"val_per_collection": per_collection} if per_collection else {}))
    log(f"step {state.step} ({minutes:.1f} min, {steps_per_s:.2f} steps/s) loss {state.loss_avg:.4f} val DSB {score:.4f} "
        + " ".join(f"{m} {v:.3f}" for m, v in {**per_mod, **per_collection}.items()))
    if score > state.best_score:
        state.best_score = score
        if ctx.is_main:
            save_model_file(out, predictor.model, predictor.config.replace(
                validation=ValidationRecord(score, per_mod, state.step, per_collection=per_collection)))
    if ctx.is_main:
        state.save(resume_path(out))
        training_curve(out.with_name(out.name + ".curve.png"), state.history)


def _record(cfg: TrainConfig, paths: list[Path], train_set: list[Sample], val_set: list[Sample],
            trained_on: list[dict], device: torch.device, ctx: ddp.DistContext) -> ModelConfig:
    """The model-file configuration of a checkpoint of this run (before validation and tuning)."""
    data = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
    training = {**asdict(cfg), "features": list(cfg.features), "collection_weights": list(cfg.collection_weights),
                "data": data, "n_train": len(train_set), "n_validation": len(val_set), "device": str(device),
                "processes": ctx.world_size}
    return ModelConfig(normalization=NormalizationConfig(cfg.p_low, cfg.p_high, channels=cfg.input_channels),
                       border_width=cfg.border_width, training=training, trained_on=trained_on,
                       nucleus_diameter=cfg.diameter or median_diameter(*(s.labels for s in train_set))[0] or None)


def train(data: str | Path | list[str | Path], out: str | Path, cfg: TrainConfig, device: torch.device | str = "auto",
          resume: bool = False, progress: Progress = no_progress) -> ModelConfig | None:
    """Train on ``data`` (one collection, or a list of them: converted folders or labeled images
    in any known layout) and write the best model to ``out``; return its configuration.

    ``cfg`` is not changed (without a budget the run takes :data:`~nucleiseg.training.config.DEFAULT_EPOCHS`).
    ``device``: 'auto' (CUDA when available), 'cpu', 'cuda' or a ``torch.device``.
    ``resume`` continues from ``<out>.resume.pt`` when it exists. Launched by ``torchrun``
    (WORLD_SIZE > 1), trains with DistributedDataParallel (:mod:`~nucleiseg.training.ddp`): only
    rank 0 logs and writes files, the validation images are shared out among the ranks and their
    scores gathered, and ranks other than 0 return None without tuning. With several
    collections, each is drawn as often as ``cfg.collection_weights`` says and validated apart
    (:mod:`~nucleiseg.training.samples`, :class:`~nucleiseg.training.validation.ValidationScore`).

    Raises
    ------
    NucleisegError
        for unreadable data or a non-finite loss; :class:`TrainingInterrupted` on SIGINT / SIGTERM.
    """
    out, cfg = Path(out), cfg.with_budget()
    ctx, device = ddp.init(choose_device(device))
    log, progress = (logger.info, progress) if ctx.is_main else ((lambda message: None), no_progress)  # rank 0 reports
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    paths = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    train_set, val_set, trained_on = load_collections(paths, cfg.border_width, cfg.p_low, cfg.p_high,
                                                      cfg.collection_weights, channels=cfg.input_channels)
    if cfg.diameter is not None:  # Cellpose's canonical size, before targets that depend on pixels
        train_set, val_set = ([at_diameter(s, cfg.diameter, cfg.border_width) for s in part]
                              for part in (train_set, val_set))
        log(f"every image resized so its nuclei are {cfg.diameter:g} px across (median equivalent diameter)")
    if cfg.weight_map:
        add_weight_maps(train_set, cfg.w0, cfg.sigma)
    for r in trained_on if len(trained_on) > 1 else []:
        log(f"{r['name']} ({r['licence']}): {r['n_train']} training and {r['n_validation']} validation images, "
            f"drawn with weight {r['weight']:g}")
    dtype = autocast_dtype(cfg.precision, device.type)
    log(f"{len(train_set)} training and {len(val_set)} validation images; device {describe(device, dtype)}"
        + (f"; {ctx.world_size} processes (DistributedDataParallel, batch {cfg.batch_size} each)" if ctx.active else ""))
    budget, state = Budget.of(cfg, len(train_set)), TrainingState.new(cfg, device)
    if resume and resume_path(out).is_file():
        state.load(resume_path(out), device)
        log(f"resumed from {resume_path(out)} at step {state.step} ({state.elapsed / 60:.1f} min)")
    weights = sampling_weights(train_set, cfg.sampling, {r["name"]: r["weight"] for r in trained_on})
    state.model.to(memory_format=torch.channels_last)  # faster convolutions (oneDNN, cuDNN), as in inference
    net = ddp.wrap(state.model, ctx, device, cfg.sync_bn)
    batches = ddp.RankBatches(weights, cfg.batch_size, ctx, cfg.seed) if ctx.active else None
    predictor = Predictor(state.eval_model, _record(cfg, paths, train_set, val_set, trained_on, device, ctx), device,
                          precision=cfg.precision)  # validation in the training's precision
    loss_fn, clock = SegmentationLoss(cfg.border_weight, cfg.dice_weight, device), Clock(state.elapsed)
    done = budget.progress(state.step, state.elapsed) >= 1.0

    def draw(step: int) -> Batch:
        return draw_batch(train_set, weights, cfg, batch_rng(cfg.seed, ctx.rank, step),
                          batches(step) if batches is not None else None)

    with stop_requested() as stop, Prefetcher(draw, background=device.type == "cuda") as prefetcher:
        since_step, since_seconds = state.step, state.elapsed  # for steps/s between validations
        for _ in progress(_until(lambda: done), max(budget.total_steps - state.step, 0) or None, "train"):
            loss = train_step(net, state, train_set, prefetcher.get(state.step), loss_fn,
                              budget.learning_rate(cfg, state.step, state.elapsed), device, ctx, dtype)
            state.step, state.elapsed = state.step + 1, clock()
            state.loss_avg = loss if state.loss_avg is None else 0.98 * state.loss_avg + 0.02 * loss
            last = ddp.any_rank(budget.progress(state.step, state.elapsed) >= 1.0, ctx, device)  # all stop together
            if state.step % cfg.val_every == 0 or last:
                steps_per_s = (state.step - since_step) / max(state.elapsed - since_seconds, 1e-9)
                _checkpoint(state, predictor, val_set, out, ctx, state.elapsed / 60, steps_per_s, log)
                state.elapsed = clock()  # validation time counts against the minutes
                since_step, since_seconds = state.step, state.elapsed
            if ddp.any_rank(bool(stop), ctx, device):
                if ctx.is_main:
                    state.save(resume_path(out))
                del net  # as below
                ddp.shutdown(ctx)
                raise TrainingInterrupted(f"stopped by {stop[0]} at step {state.step}; state saved to "
                                          f"{resume_path(out)}, continue with --resume")
            done = last
    del net  # DDP's reducer holds the process group: freed later, at exit, it aborted 1 run in 10 (gloo)
    ddp.shutdown(ctx)
    return _finish(out, cfg, state, train_set, val_set, device, log) if ctx.is_main else None


def _until(done: Callable[[], bool]) -> Iterator[None]:
    """Yield until ``done()``: the training loop's steps, for a progress bar."""
    while not done():
        yield


def _finish(out: Path, cfg: TrainConfig, state: TrainingState, train_set: list[Sample], val_set: list[Sample],
            device: torch.device, log: Callable[[str], None]) -> ModelConfig:
    """Write the best checkpoint's final model file: history, training time, validation ImageIds
    and, with ``cfg.tune``, the tuned watershed values."""
    best = Predictor.from_file(out, device)
    v = best.config.validation
    final = best.config.replace(history=state.history, training_minutes=state.elapsed / 60,
                                training={**best.config.training, "steps_done": state.step},
                                validation=ValidationRecord(v.score, v.per_modality, v.step,
                                                            ids=sorted(s.image_id for s in val_set),
                                                            per_collection=v.per_collection))
    if cfg.tune:
        final = tune_model(Predictor(best.model, final, device, precision=cfg.precision), train_set, val_set)
    save_model_file(out, best.model, final)
    v = final.validation
    log(f"best checkpoint: step {v.step}, watershed {final.watershed.to_dict()}{'' if cfg.tune else ' (not tuned)'}, "
        f"validation DSB {v.score:.4f} " + " ".join(f"{m} {x:.3f}" for m, x in {**v.per_modality,
                                                                                **v.per_collection}.items()))
    return final
