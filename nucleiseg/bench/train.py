"""``nucleiseg bench train``: training steps per second on this machine, float32 against bf16
autocast, and what drawing the batches costs.

Each row times the training loop's own parts (:func:`~nucleiseg.training.loop.draw_batch`,
:func:`~nucleiseg.training.loop.train_step`) on real crops: the batch drawing alone, then drawing
plus the optimiser step (forward, loss, backward, AdamW) as the loop ran before issue 23 (float32,
contiguous tensors, one after the other: the reference), with channels-last tensors, with bf16
autocast (how ``nucleiseg train`` runs on a CPU with native bf16), and with the next batch drawn
in the background (:class:`~nucleiseg.training.prefetch.Prefetcher`, as it runs on a GPU).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .common import machine

if TYPE_CHECKING:
    from ..training.config import TrainConfig
    from ..training.samples import Sample


def _seconds_per_step(run, steps: int, warmup: int = 2) -> float:
    """Median seconds per call of ``run(step)`` over ``steps`` calls after ``warmup``."""
    for s in range(warmup):
        run(s)
    times = []
    for s in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        run(s)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_train(samples: list["Sample"], cfg: "TrainConfig", steps: int = 10) -> dict:
    """Seconds per training step on ``samples`` with ``cfg``'s network, crops and augmentation,
    on the CPU (see the module docstring); ``steps`` timed steps per row (median)."""
    import torch

    from ..hardware import autocast_dtype, cpu_bf16, cpu_name
    from ..training import ddp
    from ..training.loop import draw_batch, train_step
    from ..training.loss import SegmentationLoss
    from ..training.prefetch import Prefetcher, batch_rng
    from ..training.samples import sampling_weights
    from ..training.state import TrainingState

    device = torch.device("cpu")
    ctx = ddp.DistContext()
    weights = sampling_weights(samples, cfg.sampling, {})
    loss_fn = SegmentationLoss(cfg.border_weight, cfg.dice_weight, device)

    def draw(step: int):
        return draw_batch(samples, weights, cfg, batch_rng(cfg.seed, 0, step))

    rows = [{"what": "draw a batch (crop, augment)", "precision": "", "channels_last": None, "prefetch": False,
             "seconds": _seconds_per_step(draw, steps)}]
    # (precision, channels-last, prefetch): the loop before issue 23 first (the reference), the loop now last
    for precision, channels_last, prefetch in (("fp32", False, False), ("fp32", True, False), ("bf16", True, False),
                                               ("bf16", True, True)):
        dtype = autocast_dtype(precision, "cpu")
        torch.manual_seed(cfg.seed)
        state = TrainingState.new(cfg, device)
        if channels_last:
            state.model.to(memory_format=torch.channels_last)
        with Prefetcher(draw, background=prefetch) as prefetcher:
            def run(step: int):
                train_step(state.model, state, samples, prefetcher.get(step), loss_fn, cfg.lr, device, ctx, dtype,
                           channels_last=channels_last)

            rows.append({"what": "draw + optimiser step", "precision": precision, "channels_last": channels_last,
                         "prefetch": prefetch, "seconds": _seconds_per_step(run, steps)})
    reference = rows[1]["seconds"]
    for r in rows:
        r["steps_per_s"] = 1.0 / r["seconds"]
        r["speed_vs_reference"] = reference / r["seconds"] if r["channels_last"] is not None else None
    auto = autocast_dtype("auto", "cpu")
    return {"machine": machine(), "cpu": cpu_name(), "native_bf16": cpu_bf16(), "torch_threads": torch.get_num_threads(),
            "auto_precision": "bf16" if auto is not None else "fp32", "features": list(cfg.features),
            "block": cfg.block, "batch": [cfg.batch_size, cfg.crop_size, cfg.crop_size], "augment": cfg.augment, "rows": rows}


def format_train(result: dict) -> str:
    lines = [f"machine: {result['machine']}; torch threads {result['torch_threads']}; native bf16: "
             f"{result['native_bf16'] or 'none'} (--precision auto trains in {result['auto_precision']})",
             f"U-Net widths {tuple(result['features'])}, {result['block']} blocks, batch {' x '.join(map(str, result['batch']))}, "
             f"--augment {result['augment']}",
             f"{'what':<30}{'precision':>10}{'ch-last':>9}{'prefetch':>10}{'ms':>8}{'steps/s':>9}{'speed':>8}"]
    for r in result["rows"]:
        ratio = f"{r['speed_vs_reference']:.2f}x" if r["speed_vs_reference"] else ""
        layout = "" if r["channels_last"] is None else "yes" if r["channels_last"] else "no"
        lines.append(f"{r['what']:<30}{r['precision']:>10}{layout:>9}{('yes' if r['prefetch'] else 'no'):>10}"
                     f"{r['seconds'] * 1e3:>8.0f}{r['steps_per_s']:>9.2f}{ratio:>8}")
    lines.append("speed: against the first timed row (the loop before issue 23); nucleiseg train runs on a CPU "
                 "as the last row but one (bf16 where the CPU has it), on a GPU with the batches prefetched")
    return "\n".join(lines)
