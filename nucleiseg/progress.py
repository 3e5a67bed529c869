"""The one progress-callback protocol of nucleiseg's long-running functions.

A function that loops over many items (images, blocks, training steps) takes
``progress: Progress`` and iterates over ``progress(items, total, description)`` instead of
``items``. The default, :func:`no_progress`, returns the items unchanged; the command line passes
a tqdm bar, e.g. ``lambda it, total, desc: tqdm(it, total=total, desc=desc)``.
"""

from __future__ import annotations

from typing import Iterable, Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    """Wraps an iterable to report progress; must yield the same items in the same order.

    ``total``: number of items when known (None for a budget in minutes, say);
    ``description``: what is counted, e.g. "predict" or "train".
    """

    def __call__(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterable[T]: ...


def no_progress(items: Iterable[T], total: int | None = None, description: str = "") -> Iterable[T]:
    """The silent :class:`Progress`: the items themselves."""
    return items
