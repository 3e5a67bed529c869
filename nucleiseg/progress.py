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
    ``description``: what is counted, e.g. "predict" or "train"; "NAME [SIZE UNIT]" says each item
    stands for SIZE UNIT (:func:`sized`: the blocks of a slide, each about 4 megapixels).
    """

    def __call__(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterable[T]: ...


def sized(name: str, size: float, unit: str) -> str:
    """The description of items that each stand for ``size`` ``unit`` on average: "NAME [SIZE UNIT]"."""
    return f"{name} [{size:.6g} {unit}]"


def parse_sized(description: str) -> tuple[str, float, str] | None:
    """(name, size, unit) of a :func:`sized` description, or None for any other."""
    import re

    match = re.fullmatch(r"(.*) \[([0-9.e+-]+) (\S+)\]", description)
    return (match[1], float(match[2]), match[3]) if match else None


def no_progress(items: Iterable[T], total: int | None = None, description: str = "") -> Iterable[T]:
    """The silent :class:`Progress`: the items themselves."""
    return items
