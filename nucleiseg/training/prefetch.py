"""Drawing the next training batch while the network computes on this one.

Cropping and augmenting a batch (:func:`~nucleiseg.training.augment.sample_batch`: NumPy and
OpenCV, which release the GIL) can run in one background thread, one step ahead of the optimiser,
so its time hides behind the forward and backward passes instead of adding to them. That pays
where the network runs on a GPU and the CPU is free; on a CPU that trains with all its cores it
does not (2-core AMD EPYC: 165 ms a step prefetched, 162 ms drawn in place, batches of 7 ms;
``nucleiseg bench train``), so the training loop prefetches on CUDA only. Each step's batch
comes from its own random generator, seeded by (seed, process rank, step), so a run draws the
same batches whether or not it is prefetched, interrupted or resumed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Generic, TypeVar

import numpy as np

T = TypeVar("T")


def batch_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The random generator of the batch of ``step`` on process ``rank`` of a run seeded ``seed``."""
    return np.random.default_rng([seed, rank, step])


class Prefetcher(Generic[T]):
    """``get(step)`` returns ``draw(step)``, computed in a background thread while the caller
    worked on the step before; ``get`` of any other step than the one prefetched draws it at once.
    With ``background=False`` every batch is drawn at once, in the caller's thread. Use as a
    context manager (the thread ends on exit)."""

    def __init__(self, draw: Callable[[int], T], background: bool = True):
        self.draw = draw
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nucleiseg-batches") if background else None
        self.pending: tuple[int, Future] | None = None

    def get(self, step: int) -> T:
        """The batch of ``step``; in the background, starts drawing the batch of ``step + 1``
        before returning."""
        if self.pool is None:
            return self.draw(step)
        if self.pending is not None and self.pending[0] == step:
            batch = self.pending[1].result()
        else:
            if self.pending is not None and not self.pending[1].cancel():
                wait([self.pending[1]])  # never two draws at once: draw need not be thread-safe
            batch = self.draw(step)
        self.pending = (step + 1, self.pool.submit(self.draw, step + 1))
        return batch

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        if self.pending is not None:
            self.pending[1].cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
