"""Distributed data-parallel training with PyTorch's own engine (``torchrun``).

``torchrun --nproc_per_node N -m nucleiseg train DATA --out model.pt ...`` (``--nnodes`` and a
rendezvous endpoint for several machines) starts N processes; each reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from its environment, joins the process group (NCCL on GPUs,
gloo on CPU) and trains a ``DistributedDataParallel`` copy of the U-Net on its own share of the
batches. Without those variables (a plain ``nucleiseg train``) nothing here is used and training
is single-process, exactly as before.

Sampling: every epoch, the images are drawn with the training weights (the same draw on every
rank, seeded by the epoch), and ``torch.utils.data.DistributedSampler`` splits those draws into
disjoint shares, one per rank. ``--batch-size`` is per process: N processes train on N x that
many crops per step.
"""

from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: The context of a plain (not distributed) run.
SINGLE_PROCESS = DistContext()


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or another launcher) set WORLD_SIZE > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun: NCCL on CUDA (one GPU per local rank),
    gloo on CPU. Returns the context and the device this rank trains on."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS, device
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local), device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (a no-op when not distributed). Drop the DistributedDataParallel
    wrapper first: the group it holds must not outlive the interpreter's own shutdown, where
    freeing it aborted the process ("terminate called without an active exception")."""
    if ctx.active and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (one all-reduce); ``flag`` when alone."""
    if not ctx.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` (with SyncBatchNorm when asked) when distributed;
    ``model`` itself otherwise."""
    if not ctx.active:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_state(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank (a no-op when alone), so
    that all ranks evaluate the same network; BatchNorm statistics otherwise differ per rank."""
    if not ctx.active:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, 0)


def gather(values: list, ctx: DistContext) -> list:
    """Concatenate every rank's ``values`` (picklable), in rank order, on every rank."""
    if not ctx.active:
        return list(values)
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


class RankBatches:
    """Image indices of this rank's batches, step by step.

    Epoch e draws ``steps_per_epoch * batch_size * world_size`` images with ``weights`` from a
    generator seeded by (seed, e), identically on every rank; ``DistributedSampler`` (shuffled,
    seeded by ``seed``, ``set_epoch(e)``) hands each rank a disjoint share. The indices depend only
    on (seed, step, rank, world size), so a run resumed at any step, with any number of
    processes, goes on without replaying the state of the old ones.
    """

    def __init__(self, weights: np.ndarray, batch_size: int, ctx: DistContext, seed: int):
        self.weights, self.batch_size, self.ctx, self.seed = weights, batch_size, ctx, seed
        self.steps_per_epoch = max(1, math.ceil(len(weights) / (batch_size * ctx.world_size)))
        self._epoch, self._rows = -1, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, row = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            n = self.steps_per_epoch * self.batch_size * self.ctx.world_size
            draws = np.random.default_rng([self.seed, epoch]).choice(len(self.weights), size=n, p=self.weights)
            sampler = DistributedSampler(range(n), num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                         shuffle=True, seed=self.seed)
            sampler.set_epoch(epoch)
            self._rows = draws[np.fromiter(sampler, np.int64)].reshape(self.steps_per_epoch, self.batch_size)
            self._epoch = epoch
        return self._rows[row]
