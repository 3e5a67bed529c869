"""Kaggle run-length encoding (RLE) of nuclei, and the submission / solution CSV files.

Format (Kaggle Data Science Bowl 2018 evaluation page,
https://www.kaggle.com/competitions/data-science-bowl-2018/overview/evaluation): pixels are
numbered from 1 in column-major order (top to bottom, then left to right: pixel (r, c) of an
H x W image is c * H + r + 1); a mask is a space-separated list of ``start length`` pairs with ascending starts
and runs that neither touch nor overlap. A submission CSV has the header
``ImageId,EncodedPixels`` and one row per nucleus; solution CSVs add ``Height,Width`` (and
``Usage``).
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import RLEError
from ..io import atomic_write
from .ids import check_image_id


def encode_labels(labels: np.ndarray) -> list[str]:
    """RLE strings of every nucleus of a label image, in increasing label order.

    Parameters
    ----------
    labels : (H, W) non-negative integer label image (gaps allowed).

    Returns
    -------
    list of str, one per non-zero label present.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise RLEError(f"encode_labels needs a 2-D integer label image, got {labels.dtype} {labels.shape}")
    flat = labels.ravel(order="F")
    pixels = np.flatnonzero(flat)
    if pixels.size == 0:
        return []
    order = np.argsort(flat[pixels], kind="stable")  # by label, pixel order kept within a label
    pixels = pixels[order]
    values = flat[pixels]
    # a run starts where the label changes or the pixel index jumps
    starts = np.ones(pixels.size, dtype=bool)
    starts[1:] = (values[1:] != values[:-1]) | (pixels[1:] != pixels[:-1] + 1)
    run_starts = np.flatnonzero(starts)
    run_lengths = np.diff(np.append(run_starts, pixels.size))
    run_values = values[run_starts]
    label_bounds = np.flatnonzero(np.diff(run_values)) + 1
    out = []
    for runs, lengths in zip(np.split(pixels[run_starts] + 1, label_bounds), np.split(run_lengths, label_bounds)):
        out.append(" ".join(f"{s} {n}" for s, n in zip(runs.tolist(), lengths.tolist())))
    return out


def decode_rle(rle: str, shape: tuple[int, int], where: str = "RLE") -> np.ndarray:
    """Decode one Kaggle RLE string to a boolean mask.

    Parameters
    ----------
    rle : ``"start length start length ..."``, starts 1-based, column-major, ascending, runs not
        touching or overlapping.
    shape : (H, W) in pixels.
    where : text naming the source (file and row) for error messages.

    Returns
    -------
    (H, W) bool.

    Raises
    ------
    RLEError
        on an odd token count, non-integers, zero or negative starts or lengths, runs past the
        image, unsorted, touching or overlapping runs.
    """
    h, w = int(shape[0]), int(shape[1])
    tokens = rle.split()
    if len(tokens) % 2:
        raise RLEError(f"{where}: odd number of values ({len(tokens)}) in run-length encoding")
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise RLEError(f"{where}: run-length encoding holds a value that is not an integer") from None
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise RLEError(f"{where}: run start below 1")
    if (lengths < 1).any():
        raise RLEError(f"{where}: run length below 1")
    ends = starts + lengths - 1
    if ends.size and ends.max() > h * w:
        raise RLEError(f"{where}: run ends at pixel {int(ends.max())}, past the {h}x{w} image ({h * w} pixels)")
    if (starts[1:] <= ends[:-1] + 1).any():
        raise RLEError(f"{where}: runs are unsorted, touching or overlapping")
    flat = np.zeros(h * w, dtype=np.int8)
    np.add.at(flat, starts - 1, 1)
    np.add.at(flat, ends[ends < h * w], -1)
    return np.cumsum(flat).astype(bool).reshape((h, w), order="F")


def decode_labels(rles: Iterable[str], shape: tuple[int, int], where: str = "RLE") -> np.ndarray:
    """Label image from RLE strings: string i becomes label i + 1.

    Returns (H, W) uint16 (uint32 past 65535 nuclei).

    Raises
    ------
    RLEError
        on a malformed string, or when two strings claim the same pixel.
    """
    rles = list(rles)
    labels = np.zeros(shape, dtype=np.uint16 if len(rles) <= 65535 else np.uint32)
    for i, rle in enumerate(rles, start=1):
        mask = decode_rle(rle, shape, f"{where}, nucleus {i}")
        if (labels[mask] != 0).any():
            raise RLEError(f"{where}: nucleus {i} overlaps an earlier nucleus")
        labels[mask] = i
    return labels


def write_submission(path: str | os.PathLike, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """Write a Kaggle submission CSV (``ImageId,EncodedPixels``), atomically. Returns the row count.

    ``items``: (ImageId, (H, W) label image) pairs. An image with no nucleus gets one row with an
    empty EncodedPixels, as Kaggle expected.
    """
    rows = 0

    def _write(tmp: Path) -> None:
        nonlocal rows
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "EncodedPixels"])
            for image_id, labels in items:
                encoded = encode_labels(np.asarray(labels).astype(np.uint32, copy=False)) or [""]
                for rle in encoded:
                    writer.writerow([image_id, rle])
                    rows += 1

    atomic_write(path, _write)
    return rows


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "ImageId" not in reader.fieldnames or "EncodedPixels" not in reader.fieldnames:
                raise RLEError(f"{path}: not a Kaggle CSV (header must hold ImageId and EncodedPixels)")
            for line, row in enumerate(reader, start=2):
                if None in row.values() or None in row:
                    raise RLEError(f"{path}, line {line}: wrong number of columns")
                yield line, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RLEError(f"{path}: cannot read CSV ({exc})") from None


def read_csv_rles(path: str | os.PathLike) -> dict[str, dict]:
    """Group the rows of a submission or solution CSV by ImageId.

    Returns {ImageId: {"rles": [str, ...], "shape": (H, W) or None}}; empty EncodedPixels rows
    (images with no nucleus) give no RLE. Shape comes from Height and Width when present.

    Raises
    ------
    RLEError
        if the file is unreadable, lacks the ImageId / EncodedPixels header, has rows with missing
        columns, or non-integer / inconsistent Height and Width for one ImageId.
    ImageIdError
        for an ImageId that is not a plain file name (e.g. ``../x``).
    """
    path = Path(path)
    out: dict[str, dict] = defaultdict(lambda: {"rles": [], "shape": None})
    for line, row in _rows(path):
        image_id = check_image_id(row["ImageId"].strip(), f"{path}, line {line}: ")
        entry = out[image_id]
        if "Height" in row and "Width" in row and row["Height"].strip():
            try:
                shape = (int(float(row["Height"])), int(float(row["Width"])))
            except ValueError:
                raise RLEError(f"{path}, line {line}: Height/Width not integers") from None
            if entry["shape"] is not None and entry["shape"] != shape:
                raise RLEError(f"{path}, line {line}: {image_id} has two sizes {entry['shape']} and {shape}")
            entry["shape"] = shape
        if row["EncodedPixels"].strip():
            entry["rles"].append(row["EncodedPixels"].strip())
    return dict(out)


def read_solution_csv(path: str | os.PathLike, shapes: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Read a solution (or submission) CSV into label images, one per ImageId.

    Parameters
    ----------
    path : CSV with ``ImageId,EncodedPixels`` and, for a solution, ``Height,Width``.
    shapes : ImageId -> (H, W) for files without Height/Width (a submission).

    Returns
    -------
    {ImageId: (H, W) uint16 label image}; row order within an ImageId gives labels 1, 2, ...

    Raises
    ------
    RLEError
        on any malformed row, overlapping nuclei, or an ImageId whose size is unknown.
    """
    path = Path(path)
    out = {}
    for image_id, entry in read_csv_rles(path).items():
        shape = entry["shape"] or (shapes or {}).get(image_id)
        if shape is None:
            raise RLEError(f"{path}: size of {image_id} unknown (no Height/Width columns)")
        out[image_id] = decode_labels(entry["rles"], shape, f"{path}, {image_id}")
    return out
