"""``nucleiseg convert``: labeled images in any layout of :mod:`nucleiseg.data.layouts` (DSB2018,
images/ + masks/, Cellpose, Aperio XML) to label images, training arrays and a report.

Output folder layout::

    DST/labels/<ImageId>.tif   uint16 label image (0 = background), Fiji / napari readable
    DST/train/<ImageId>.npz    what ``nucleiseg train`` reads: ``image`` (as stored),
                               ``labels`` (H, W) and ``classes`` (H, W) uint8 3-class target
    DST/report.csv             one row per image: size, modality, nucleus count, defects, status
    DST/provenance.json        what it was made from, under which licence
                               (:mod:`nucleiseg.data.provenance`), the layout, the counts

Every file is written atomically; an image that fails is reported and the rest go on.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..data.images import read_label_image
from ..data.layouts import require_collection
from ..data.provenance import PROVENANCE_FILE, Provenance, identify
from ..data.rle import write_submission
from ..data.split import modality
from ..errors import NucleisegError
from ..io import atomic_write, write_label_image, write_table
from ..progress import Progress, no_progress
from .border import DEFAULT_BORDER_WIDTH, class_map


@dataclass
class ConvertRow:
    """One line of the conversion report."""

    image_id: str
    status: str  # "ok" or "failed"
    height: int = 0
    width: int = 0
    modality: str = ""
    n_nuclei: int = 0
    defects: str = ""


def save_training_arrays(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, border_width: int) -> None:
    """Write one training ``.npz`` (image, labels, classes, border_width) atomically."""

    def _write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(
            buf, image=image, labels=labels, classes=class_map(labels, border_width), border_width=border_width
        )
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, _write)


def convert_collection(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    border_width: int = DEFAULT_BORDER_WIDTH,
    to_rle: str | os.PathLike | None = None,
    progress: Progress = no_progress,
    name: str | None = None,
    licence: str | None = None,
) -> list[ConvertRow]:
    """Convert the labeled images in ``src`` (see module docstring). Returns the report rows.

    ``name`` and ``licence`` state the collection's provenance (by default: recognised, or
    unknown; :func:`nucleiseg.data.provenance.identify`). ``progress`` wraps the per-image loop
    (see :mod:`nucleiseg.progress`).

    Raises
    ------
    AnnotationError
        if ``src`` holds no known layout (single images failing are reported, not raised).
    """
    dst = Path(dst)
    collection = require_collection(src)
    rows: list[ConvertRow] = []
    converted: list[tuple[str, Path]] = []
    ids = collection.ids()
    for image_id, item in zip(ids, progress(collection.items(ids), len(ids), "convert")):
        if isinstance(item, NucleisegError):
            rows.append(ConvertRow(image_id, "failed", defects=str(item)))
            continue
        labels_path = dst / "labels" / f"{image_id}.tif"
        write_label_image(labels_path, item.labels)
        save_training_arrays(dst / "train" / f"{image_id}.npz", item.image, item.labels, border_width)
        converted.append((image_id, labels_path))
        h, w = item.labels.shape
        rows.append(
            ConvertRow(image_id, "ok", h, w, modality(item.image), item.n_nuclei, "; ".join(map(str, item.defects)))
        )
    write_report(dst / "report.csv", rows)
    write_provenance(dst, identify(src, ids, name, licence), collection.layout, rows)
    if to_rle is not None:
        write_submission(to_rle, ((i, read_label_image(p)) for i, p in converted))
    return rows


def write_provenance(dst: Path, provenance: Provenance, layout: str, rows: list[ConvertRow]) -> None:
    """Write ``dst/provenance.json`` atomically: the provenance, the source layout and the counts."""
    from .. import __version__

    ok = [r for r in rows if r.status == "ok"]
    record = {"provenance": provenance.to_dict(), "layout": layout, "images": len(ok),
              "nuclei": sum(r.n_nuclei for r in ok), "converted_by": f"nucleiseg {__version__}"}
    atomic_write(dst / PROVENANCE_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


def write_report(path: Path, rows: list[ConvertRow]) -> None:
    """Write the conversion report CSV atomically."""
    write_table(path, [asdict(r) for r in rows], [f.name for f in fields(ConvertRow)])
