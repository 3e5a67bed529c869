"""What a training run carries from step to step, and when it stops.

:class:`TrainingState` holds the model, optimiser, weight average (EMA), step, elapsed time,
best validation score, history and PyTorch's random state, and saves / loads them as the
resumable ``<out>.resume.pt`` (tensors and plain data, read with ``weights_only=True``).
:class:`Budget` turns the requested epochs, steps and minutes into a stopping rule and the
learning-rate schedule: warm-up over the first 3 % of the budget, then a cosine to 1 % of the
peak (or constant), where "budget" is whichever of steps and minutes ends first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import atomic_write
from ..model.config import UNetConfig
from ..model.unet import UNet
from ..transforms import input_channel_count
from .config import TrainConfig

WARMUP = 0.03  # fraction of the budget
FINAL_LR = 0.01  # of the peak, at the end of the cosine


def lr_factor(progress: float) -> float:
    """Learning rate / peak at ``progress`` (0..1) of the budget: linear warm-up, then cosine."""
    if progress < WARMUP:
        return max(progress / WARMUP, FINAL_LR)
    t = min(1.0, (progress - WARMUP) / (1 - WARMUP))
    return FINAL_LR + (1 - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Budget:
    """When a run stops: after ``total_steps`` (0 = no step budget) or ``minutes`` (None = no time
    budget), whichever comes first."""

    total_steps: int
    minutes: float | None

    @classmethod
    def of(cls, cfg: TrainConfig, n_images: int) -> "Budget":
        """The budget of ``cfg`` (with a budget, see :meth:`TrainConfig.with_budget`) for
        ``n_images`` training images."""
        steps_per_epoch = max(1, math.ceil(n_images / cfg.batch_size))
        return cls(max(cfg.steps or 0, int(math.ceil((cfg.epochs or 0) * steps_per_epoch))), cfg.minutes)

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used after ``step`` steps and ``elapsed`` seconds (>= 1: done)."""
        parts = []
        if self.total_steps:
            parts.append(step / self.total_steps)
        if self.minutes:
            parts.append(elapsed / (self.minutes * 60))
        return max(parts)

    def learning_rate(self, cfg: TrainConfig, step: int, elapsed: float) -> float:
        """The learning rate of the next step."""
        return cfg.lr * (lr_factor(self.progress(step, elapsed)) if cfg.schedule == "cosine" else 1.0)


@dataclass
class TrainingState:
    """Everything a run needs to go on from where it is (see the module docstring)."""

    model: UNet
    optimizer: torch.optim.Optimizer
    ema: torch.optim.swa_utils.AveragedModel | None
    step: int = 0
    elapsed: float = 0.0  # seconds of training, validation included
    best_score: float = -1.0
    history: list[dict] = field(default_factory=list)
    loss_avg: float | None = None  # smoothed training loss (not saved)

    @classmethod
    def new(cls, cfg: TrainConfig, device: torch.device) -> "TrainingState":
        """A fresh U-Net, AdamW and (with ``cfg.ema``) weight average; the initial weights come from
        torch's current random state (seed it first: the same on every rank)."""
        model = UNet(UNetConfig(input_channel_count(cfg.input_channels), 3, cfg.features, cfg.block)).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ema = None
        if cfg.ema > 0:
            ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        return cls(model, optimizer, ema)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved: the average with EMA, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, path: Path) -> None:
        """Write the resumable state atomically."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "elapsed": self.elapsed, "best_score": self.best_score, "history": self.history,
                 "torch_rng": torch.get_rng_state()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path, device: torch.device) -> None:
        """Continue from a state :meth:`save` wrote, by any number of processes (each step's batch
        is drawn from its own generator, :func:`~nucleiseg.training.prefetch.batch_rng`, so no
        sampling state needs restoring)."""
        state = torch.load(path, map_location=device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.best_score, self.history = state["best_score"], state["history"]
        # map_location put the CPU generator's state on ``device`` too; set_rng_state takes a CPU
        # ByteTensor only (on CUDA, resuming failed: "RNG state must be a torch.ByteTensor")
        torch.set_rng_state(state["torch_rng"].cpu())


class Clock:
    """Seconds of training so far, counting from an earlier run's ``elapsed`` when resumed."""

    def __init__(self, elapsed: float = 0.0):
        self.start = time.perf_counter() - elapsed

    def __call__(self) -> float:
        return time.perf_counter() - self.start
