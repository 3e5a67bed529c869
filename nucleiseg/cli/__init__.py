"""The ``nucleiseg`` command line: convert, train, tune, predict, show, score, bench, export.

A thin layer over the library: each command parses options, calls the library, and reports.
Errors nucleiseg raises on purpose (bad files, bad options) are printed as one line. Defaults
and choices come from the library's dataclasses and constants, never restated here.
"""

from . import bench, data, evaluation, export, inference, training  # noqa: F401  (each registers its commands)
from ._common import main

__all__ = ["main"]
