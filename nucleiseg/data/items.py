"""One labeled image as read from any annotation layout, and the defects found while reading it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Defect:
    """One annotation defect of one nucleus.

    ``kind``: 'shape' (a mask of another size than the image), 'empty' (no pixel), 'overlap'
    (pixels another nucleus already holds), 'disconnected' (several pieces), 'degenerate' (a
    polygon of fewer than 3 distinct corners or no area), 'outside' (polygon corners outside the
    image); ``mask``: which nucleus (a mask file, or a polygon); ``detail``: what was done.
    """

    kind: str
    mask: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.mask} ({self.detail})"


@dataclass
class LabeledItem:
    """One image with its label image and the annotation defects found while building it.

    ``image`` (H, W[, C]) as stored; ``labels`` (H, W) uint16 (uint32 past 65535 nuclei).
    """

    image_id: str
    image: np.ndarray
    labels: np.ndarray
    defects: list[Defect] = field(default_factory=list)

    @property
    def n_nuclei(self) -> int:
        return int(len(np.unique(self.labels)) - (1 if (self.labels == 0).any() else 0))


class LabelBuilder:
    """A label image built one nucleus at a time, with the rules every annotation reader shares.

    Each nucleus added gets the next label (1, 2, ...); pixels an earlier nucleus already holds
    stay with it (reported as 'overlap'); a nucleus with no pixel is skipped ('empty'); one in
    several 8-connected pieces is kept as one label ('disconnected').

    ``shape``: (H, W); ``max_nuclei``: how many nuclei may be added (uint16 labels up to 65535,
    else uint32).
    """

    def __init__(self, shape: tuple[int, int], max_nuclei: int):
        self.labels = np.zeros(shape, dtype=np.uint16 if max_nuclei <= 65535 else np.uint32)
        self.defects: list[Defect] = []
        self.count = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, name: str) -> None:
        """Add the nucleus made of pixels (``rows``, ``cols``) (int arrays, inside the image)."""
        from scipy import ndimage

        if rows.size == 0:
            self.defects.append(Defect("empty", name, "no foreground pixel; skipped"))
            return
        self.count += 1
        taken = self.labels[rows, cols] != 0
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        crop = np.zeros((r1 - r0 + 1, c1 - c0 + 1), bool)
        crop[rows - r0, cols - c0] = True
        if taken.any():
            others = np.unique(self.labels[rows, cols][taken])
            self.defects.append(Defect("overlap", name, f"{int(taken.sum())} px already in label(s) "
                                                        f"{others.tolist()}; kept there"))
            rows, cols = rows[~taken], cols[~taken]
        self.labels[rows, cols] = self.count
        n_pieces = ndimage.label(crop, structure=np.ones((3, 3), bool))[1]
        if n_pieces > 1:
            self.defects.append(Defect("disconnected", name, f"{n_pieces} separate pieces; kept as one label"))
