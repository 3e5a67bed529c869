"""``nucleiseg train``: fit the U-Net on DSB2018-style data, validating with the DSB score.

Data: a folder written by ``nucleiseg convert`` (``train/*.npz``) or a DSB2018 root folder.
Validation: the committed DSB2018 split (:func:`nucleiseg.data.split.validation_ids`); for
other data (no ImageId in that list) the same stratified rule picks 15% of the given images.

Loss: pixel-wise cross-entropy over (mask - border, border, background), plus soft Dice over
the first two channels. The cross-entropy is weighted either per class, ``(1, border_weight,
1)`` (default), or per pixel by the U-Net weight map (``weight_map=True``: eq. 2 of
arXiv:1505.04597 with ``w0``, ``sigma`` and balanced class weights, computed once per image when
the data is loaded: a few seconds for all of stage1_train, so nothing is stored on disk). Optimiser AdamW; the
learning rate warms up over the first 3% of the budget, then follows a cosine to 1% of its
peak, where "budget" is the furthest of the requested epochs, steps and minutes. The best
checkpoint by validation DSB score is written to ``--out``; a resumable state (model, optimiser,
step, elapsed time, RNG states) to ``<out>.resume.pt`` and the loss / validation-score curve to
``<out>.curve.png`` at every validation.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import ddp
from .augment import AUGMENT_LEVELS, sample_batch
from .checkpoint import save_model
from .data.dsb2018 import is_dsb2018_root, iter_dsb2018
from .data.images import atomic_write, normalize_image
from .data.split import make_validation_split, modality, validation_ids
from .errors import NucleisegError
from .figures import training_curve
from .metrics import dsb_score
from .model import UNet, UNetConfig
from .postprocess import WatershedParams, probabilities_to_labels
from .predict import Predictor
from .targets import DEFAULT_BORDER_WIDTH, class_map
from .weightmap import unet_weight_map


SAMPLING = ("balanced", "uniform")
SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Training options (all plain data; stored in the model file)."""

    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    crop_size: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    border_weight: float = 3.0
    dice_weight: float = 1.0
    border_width: int = DEFAULT_BORDER_WIDTH
    epochs: float | None = None
    steps: int | None = None
    minutes: float | None = None
    weight_map: bool = False
    w0: float = 10.0
    sigma: float = 5.0
    val_every: int = 500
    seed: int = 0
    p_low: float = 1.0
    p_high: float = 99.8
    sampling: str = "balanced"
    augment: str = "full"
    schedule: str = "cosine"
    ema: float = 0.0
    tune: bool = True
    sync_bn: bool = False

    def __post_init__(self) -> None:
        choices = {"sampling": SAMPLING, "augment": AUGMENT_LEVELS, "schedule": SCHEDULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise NucleisegError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema < 1.0:
            raise NucleisegError(f"ema must be in [0, 1), got {self.ema}")


@dataclass
class Sample:
    """One training or validation image, normalised, with its targets."""

    image_id: str
    image: np.ndarray  # (H, W) float32 in [0, 1]
    classes: np.ndarray  # (H, W) uint8
    labels: np.ndarray  # (H, W) uint16
    modality: str
    pixel_weights: np.ndarray | None = None  # (H, W) float32 U-Net weight map, when used


def load_samples(data: str | Path, border_width: int, p_low: float, p_high: float,
                 progress: Callable[[Iterable], Iterable] = lambda it: it) -> list[Sample]:
    """Read every image of a converted folder or a DSB2018 folder into memory.

    Raises
    ------
    NucleisegError
        if ``data`` holds neither layout or no readable image.
    """
    data = Path(data)
    out = []
    if (data / "train").is_dir():
        for path in progress(sorted((data / "train").glob("*.npz"))):
            with np.load(path) as z:
                image, labels = z["image"], z["labels"]
                classes = z["classes"] if int(z["border_width"]) == border_width else class_map(labels, border_width)
            out.append(Sample(path.stem, normalize_image(image, p_low, p_high), classes, labels, modality(image)))
    elif is_dsb2018_root(data):
        for item in progress(iter_dsb2018(data)):
            if isinstance(item, NucleisegError):
                print(f"skipped: {item}")
                continue
            out.append(
                Sample(item.image_id, normalize_image(item.image, p_low, p_high), class_map(item.labels, border_width),
                       item.labels, modality(item.image))
            )
    else:
        raise NucleisegError(f"{data}: neither a 'nucleiseg convert' output (train/*.npz) nor a DSB2018 folder")
    if not out:
        raise NucleisegError(f"{data}: no training image found")
    return out


def split_samples(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) by the committed DSB2018 split, or the same rule on other data."""
    held = validation_ids() & {s.image_id for s in samples}
    if not held:
        held = set(make_validation_split({s.image_id: (s.modality, *s.image.shape) for s in samples}))
    if not held or len(held) == len(samples):
        held = {samples[-1].image_id}
    train = [s for s in samples if s.image_id not in held] or samples
    return train, [s for s in samples if s.image_id in held]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, channels: tuple[int, ...] = (0, 1),
                   eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over ``channels`` of softmax(logits) vs one-hot(target)."""
    prob = torch.softmax(logits.float(), dim=1)
    losses = []
    for c in channels:
        p, t = prob[:, c], (target == c).float()
        inter = (p * t).sum()
        losses.append(1 - (2 * inter + eps) / (p.sum() + t.sum() + eps))
    return torch.stack(losses).mean()


def _summarize(scores: list[tuple[str, float]]) -> tuple[float, dict[str, float]]:
    """(mean score, {modality: mean score}) of (modality, score) pairs."""
    by_mod: dict[str, list[float]] = {}
    for m, v in scores:
        by_mod.setdefault(m, []).append(v)
    return float(np.mean([v for _, v in scores])), {m: float(np.mean(v)) for m, v in sorted(by_mod.items())}


def score_probabilities(probabilities: Iterable[np.ndarray], samples: list[Sample], params: WatershedParams
                        ) -> tuple[float, dict[str, float]]:
    """Mean DSB score of the watershed labels of ``probabilities`` (one (3, H, W) array per sample,
    in order) against the samples' labels: (overall, {modality: score})."""
    scores: dict[str, list[float]] = {}
    all_scores = []
    for p, s in zip(probabilities, samples):
        score = dsb_score(s.labels, probabilities_to_labels(p, params))
        scores.setdefault(s.modality, []).append(score)
        all_scores.append(score)
    per_modality = {m: float(np.mean(v)) for m, v in sorted(scores.items())}
    return float(np.mean(all_scores)), per_modality


def evaluate(predictor: Predictor, samples: list[Sample], params: WatershedParams, keep_probabilities: bool = False
             ) -> tuple[float, dict[str, float], list[np.ndarray] | None]:
    """DSB score over ``samples``: returns (overall, {modality: score}, probabilities or None).

    Probabilities are computed one image at a time and kept (float32) only when asked for."""
    kept: list[np.ndarray] = []

    def probabilities() -> Iterator[np.ndarray]:
        for s in samples:
            p = predictor.probabilities_of_normalized(s.image)
            if keep_probabilities:
                kept.append(p)
            yield p

    overall, per_modality = score_probabilities(probabilities(), samples, params)
    return overall, per_modality, (kept if keep_probabilities else None)


MARKER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MASK_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREA_QUANTILES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)


def min_area_candidates(samples: list[Sample], quantiles: Iterable[float] = MIN_AREA_QUANTILES) -> dict[float, int]:
    """Minimum-size candidates learned from the training nuclei: {quantile: area in pixels}.

    The q-quantile of the areas (pixels) of every nucleus in ``samples``; quantile 0 gives 0 (keep
    everything). The watershed tuning picks one of these on the validation split.
    """
    areas = np.concatenate([np.bincount(s.labels.ravel())[1:] for s in samples] or [np.zeros(0, np.int64)])
    areas = areas[areas > 0]
    return {float(q): (0 if q == 0 or areas.size == 0 else int(np.quantile(areas, q))) for q in quantiles}


def tune_watershed(probabilities: list[np.ndarray], samples: list[Sample], min_areas: Iterable[int] = (0, 10, 20, 40),
                   markers: Iterable[float] = MARKER_THRESHOLDS, masks: Iterable[float] = MASK_THRESHOLDS,
                   ) -> tuple[WatershedParams, float]:
    """Grid-search marker / mask thresholds and minimum area (pixels) for the best mean DSB score.

    One watershed per image and (marker, mask) pair; the minimum areas are then applied to its
    labels (dropping small objects does not change the others), so the grid costs
    ``len(markers) * len(masks)`` watersheds, not that times ``len(min_areas)``.
    Returns (best parameters, their mean score); ties keep the earlier grid point.
    """
    min_areas = sorted(set(int(a) for a in min_areas))
    best = (WatershedParams(), -1.0)
    for marker in markers:
        for mask in masks:
            totals = np.zeros(len(min_areas))
            for p, s in zip(probabilities, samples):
                labels = probabilities_to_labels(p, WatershedParams(marker, mask, 0))
                areas = np.bincount(labels.ravel())
                for j, min_area in enumerate(min_areas):
                    small = areas < min_area
                    small[0] = False
                    totals[j] += dsb_score(s.labels, np.where(small[labels], 0, labels) if small.any() else labels)
            for j, min_area in enumerate(min_areas):
                score = totals[j] / max(len(samples), 1)
                if score > best[1]:
                    best = (WatershedParams(marker, mask, min_area), float(score))
    return best


def tune_for(predictor: Predictor, train_set: list[Sample], val_set: list[Sample]) -> dict:
    """Tune the watershed of ``predictor`` on ``val_set``, minimum sizes from ``train_set``.

    Returns the model-file entries to update: ``watershed`` (the tuned values),
    ``min_area_quantiles`` (the candidates, {quantile: pixels}) and ``validation`` (score and
    per-modality scores with the tuned values, the score with the model's current values as
    ``score_default_watershed``, the validation ImageIds, and the other entries already there).
    """
    _, _, probs = evaluate(predictor, val_set, predictor.watershed, keep_probabilities=True)
    before, _ = score_probabilities(probs, val_set, predictor.watershed)
    candidates = min_area_candidates(train_set)
    tuned, _ = tune_watershed(probs, val_set, candidates.values())
    score, per_mod = score_probabilities(probs, val_set, tuned)  # the same probabilities, no second pass
    validation = {**predictor.config.get("validation", {}), "score": score, "per_modality": per_mod,
                  "score_default_watershed": before, "ids": sorted(s.image_id for s in val_set)}
    return {"watershed": tuned.to_dict(), "min_area_quantiles": {str(q): a for q, a in candidates.items()},
            "validation": validation}


class TrainingInterrupted(NucleisegError):
    """Training stopped by SIGINT or SIGTERM after saving a resumable state."""


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


def _lr_factor(progress: float) -> float:
    warm = 0.03
    if progress < warm:
        return max(progress / warm, 0.01)
    t = min(1.0, (progress - warm) / (1 - warm))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def train(data: str | Path, out: str | Path, cfg: TrainConfig, device: torch.device, resume: bool = False,
          log: Callable[[str], None] = print, progress_bar: Callable[..., Any] | None = None) -> dict:
    """Train and write the best model to ``out``. Returns the final summary (plain data).

    Launched by ``torchrun`` (WORLD_SIZE > 1), trains with DistributedDataParallel
    (:mod:`nucleiseg.ddp`): only rank 0 logs and writes files, the validation images are shared
    out among the ranks and their scores gathered, and ranks other than 0 return
    ``{"rank": r}`` without tuning.
    """
    out = Path(out)
    resume_path = out.with_name(out.name + ".resume.pt")
    if cfg.epochs is None and cfg.steps is None and cfg.minutes is None:
        cfg.epochs = 50
    ctx, device = ddp.init(device)
    if not ctx.is_main:
        log, progress_bar = (lambda m: None), None
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    rng = np.random.default_rng([cfg.seed, ctx.rank] if ctx.active else cfg.seed)

    samples = load_samples(data, cfg.border_width, cfg.p_low, cfg.p_high)
    train_set, val_set = split_samples(samples)
    if cfg.weight_map:
        for s in train_set:
            s.pixel_weights = unet_weight_map(s.labels, cfg.w0, cfg.sigma)
    log(f"{len(train_set)} training and {len(val_set)} validation images; device {device}"
        + (f"; {ctx.world_size} processes (DistributedDataParallel, batch {cfg.batch_size} each)" if ctx.active else ""))
    counts = {m: sum(s.modality == m for s in train_set) for m in {s.modality for s in train_set}}
    if cfg.sampling == "balanced":  # rare modalities and large images drawn more often than uniform
        weights = np.array([math.sqrt(s.image.size) / math.sqrt(counts[s.modality]) for s in train_set])
    else:
        weights = np.ones(len(train_set))
    weights /= weights.sum()
    steps_per_epoch = max(1, math.ceil(len(train_set) / cfg.batch_size))
    total_steps = max(
        cfg.steps or 0,
        int(math.ceil((cfg.epochs or 0) * steps_per_epoch)),
    )

    model = UNet(UNetConfig(1, 3, tuple(cfg.features))).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema),
                                               use_buffers=True) if cfg.ema > 0 else None)
    eval_model = ema.module if ema is not None else model  # the weights validated and saved
    batches = ddp.RankBatches(weights, cfg.batch_size, ctx, cfg.seed) if ctx.active else None
    class_weights = torch.tensor([1.0, cfg.border_weight, 1.0], device=device)
    step, elapsed, best_score, history = 0, 0.0, -1.0, []
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        step, elapsed, best_score, history = state["step"], state["elapsed"], state["best_score"], state["history"]
        if ctx.active:  # any number of processes: streams derived from (seed, rank, step)
            rng = np.random.default_rng([cfg.seed, ctx.rank, step])
        else:
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = state["numpy_rng"]
        log(f"resumed from {resume_path} at step {step} ({elapsed / 60:.1f} min)")
    net = model
    if ctx.active:
        if cfg.sync_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    def progress_of(step: int, elapsed: float) -> float:
        parts = []
        if total_steps:
            parts.append(step / total_steps)
        if cfg.minutes:
            parts.append(elapsed / (cfg.minutes * 60))
        return max(parts)  # stop at whichever budget is reached first

    meta = {
        "normalization": {"method": "gray, percentile stretch, invert light background",
                          "p_low": cfg.p_low, "p_high": cfg.p_high},
        "border_width": cfg.border_width,
        "training": {**asdict(cfg), "features": list(cfg.features), "data": str(data),
                     "n_train": len(train_set), "n_validation": len(val_set), "device": str(device),
                     "processes": ctx.world_size},
    }
    predictor = Predictor(eval_model, meta, device, channels_last=False)  # leave the trained weights' layout alone
    params = WatershedParams()
    bar = progress_bar(total=total_steps or None) if progress_bar else None
    if bar is not None:
        bar.update(step)
    start = time.perf_counter() - elapsed
    use_amp = device.type == "cuda"
    loss_avg = None

    def validate() -> tuple[float, dict[str, float]]:
        if not ctx.active:
            return evaluate(predictor, val_set, params)[:2]
        for buffer in model.buffers():  # rank 0's BatchNorm statistics on every rank: one model scored
            torch.distributed.broadcast(buffer, 0)
        shard = val_set[ctx.rank :: ctx.world_size]
        probs = (predictor.probabilities_of_normalized(s.image) for s in shard)
        mine = [(s.modality, dsb_score(s.labels, probabilities_to_labels(p, params))) for s, p in zip(shard, probs)]
        return _summarize(ddp.gather(mine, ctx))

    def save_state() -> None:
        if not ctx.is_main:
            return
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                 "best_score": best_score, "history": history, "torch_rng": torch.get_rng_state(),
                 "numpy_rng": rng.bit_generator.state}
        if ema is not None:
            state["ema"] = ema.state_dict()
        atomic_write(resume_path, lambda tmp: torch.save(state, tmp))

    done = progress_of(step, elapsed) >= 1.0
    with stop_requested() as stop, (bar if bar is not None else contextlib.nullcontext()):
        while not done:
            net.train()
            xs, ys, ws, idx = sample_batch([s.image for s in train_set], [s.classes for s in train_set], weights,
                                           cfg.batch_size, cfg.crop_size, rng,
                                           [s.pixel_weights for s in train_set] if cfg.weight_map else None,
                                           cfg.augment, idx=batches(step) if batches is not None else None)
            x = torch.from_numpy(xs).to(device, non_blocking=True)
            y = torch.from_numpy(ys).to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (_lr_factor(progress_of(step, elapsed)) if cfg.schedule == "cosine" else 1.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x)
            if ws is None:
                ce = F.cross_entropy(logits.float(), y, weight=class_weights)
            else:
                pixel_w = torch.from_numpy(ws).to(device, non_blocking=True)
                ce = (F.cross_entropy(logits.float(), y, reduction="none") * pixel_w).sum() / pixel_w.sum()
            loss = ce + cfg.dice_weight * soft_dice_loss(logits, y)
            finite = bool(torch.isfinite(loss))
            if ddp.any_rank(not finite, ctx, device):
                names = ", ".join(train_set[i].image_id for i in idx) if not finite else "of another process"
                ddp.shutdown(ctx)
                raise NucleisegError(f"non-finite loss at step {step} on images {names}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            elapsed = time.perf_counter() - start
            loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_avg:.3f}", best_val=f"{max(best_score, 0):.3f}", refresh=False)
            last = ddp.any_rank(progress_of(step, elapsed) >= 1.0, ctx, device)  # every rank stops together
            if step % cfg.val_every == 0 or last:
                eval_model.eval()
                score, per_mod = validate()
                history.append({"step": step, "minutes": elapsed / 60, "loss": loss_avg, "val_score": score,
                                "val_per_modality": per_mod})
                log(f"step {step} ({elapsed / 60:.1f} min) loss {loss_avg:.4f} val DSB {score:.4f} "
                    + " ".join(f"{m} {v:.3f}" for m, v in per_mod.items()))
                if score > best_score:
                    best_score = score
                    if ctx.is_main:
                        save_model(out, eval_model, {**meta, "watershed": params.to_dict(),
                                                "validation": {"score": score, "per_modality": per_mod,
                                                               "step": step}})
                save_state()
                if ctx.is_main:
                    training_curve(out.with_name(out.name + ".curve.png"), history)
                elapsed = time.perf_counter() - start  # validation time counts against --minutes
            if ddp.any_rank(bool(stop), ctx, device):
                save_state()
                ddp.shutdown(ctx)
                raise TrainingInterrupted(f"stopped by {stop[0]} at step {step}; state saved to {resume_path}, "
                                          "continue with --resume")
            done = last
    ddp.shutdown(ctx)
    if not ctx.is_main:
        return {"rank": ctx.rank}
    # tune the watershed on the best model's validation probabilities and store the result
    best = Predictor.from_file(out, device)
    final = {**best.config, "history": history, "training_minutes": elapsed / 60,
             "validation": {**best.config["validation"], "ids": sorted(s.image_id for s in val_set)}}
    final["training"]["steps_done"] = step
    if cfg.tune:
        final.update(tune_for(best, train_set, val_set))
    save_model(out, best.model, final)
    v = final["validation"]
    log(f"best checkpoint: step {v['step']}, watershed {final['watershed']}{'' if cfg.tune else ' (not tuned)'}, "
        f"validation DSB {v['score']:.4f} " + " ".join(f"{m} {x:.3f}" for m, x in v["per_modality"].items()))
    return final
