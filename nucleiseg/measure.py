"""Per-nucleus measurements, through ``skimage.measure.regionprops_table``.

One row per nucleus: label, area (pixels, and square micrometres with a pixel size), centroid
(row, column; pixels), bounding box (min row, min column, max row, max column; pixels, max
exclusive), equivalent diameter (pixels), eccentricity, solidity and mean intensity of the
gray image (alpha dropped, colour channels averaged; in the image's own units).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops_table

from .transforms import to_gray_float

PROPERTIES = ("label", "area", "centroid", "bbox", "equivalent_diameter_area", "eccentricity", "solidity",
              "intensity_mean")
COLUMNS = ("label", "area_px", "area_um2", "centroid_row", "centroid_col", "bbox_min_row", "bbox_min_col",
           "bbox_max_row", "bbox_max_col", "equivalent_diameter_px", "eccentricity", "solidity", "mean_intensity")


def measure_nuclei(labels: np.ndarray, image: np.ndarray, pixel_size: float | None = None) -> dict[str, np.ndarray]:
    """Measure every nucleus of a label image.

    Parameters
    ----------
    labels : (H, W) non-negative integer label image.
    image : (H, W) or (H, W, C) image the labels belong to (for mean intensity).
    pixel_size : micrometres per pixel; None leaves ``area_um2`` as NaN.

    Returns
    -------
    dict of column name (:data:`COLUMNS`) -> (N,) array, one entry per nucleus in label order.

    Raises
    ------
    ValueError
        if the shapes differ or ``pixel_size`` is not positive.
    """
    labels = np.asarray(labels)
    gray = to_gray_float(image)
    if gray.shape != labels.shape:
        raise ValueError(f"image {gray.shape} and labels {labels.shape} differ in shape")
    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"pixel_size must be > 0 micrometres, got {pixel_size}")
    t = regionprops_table(labels.astype(np.int32), intensity_image=gray, properties=PROPERTIES)
    area = t["area"].astype(np.int64)
    return {
        "label": t["label"],
        "area_px": area,
        "area_um2": area * pixel_size**2 if pixel_size else np.full(area.shape, np.nan),
        "centroid_row": t["centroid-0"],
        "centroid_col": t["centroid-1"],
        "bbox_min_row": t["bbox-0"],
        "bbox_min_col": t["bbox-1"],
        "bbox_max_row": t["bbox-2"],
        "bbox_max_col": t["bbox-3"],
        "equivalent_diameter_px": t["equivalent_diameter_area"],
        "eccentricity": t["eccentricity"],
        "solidity": t["solidity"],
        "mean_intensity": t["intensity_mean"],
    }


def summary_row(image_id: str, table: dict[str, np.ndarray], seconds: float | None) -> dict:
    """One line of ``summary.csv``: count and mean / median area (pixels) of an image's nuclei."""
    area = table["area_px"]
    return {"image_id": image_id, "n_nuclei": int(area.size),
            "mean_area_px": float(area.mean()) if area.size else float("nan"),
            "median_area_px": float(np.median(area)) if area.size else float("nan"),
            "seconds": float("nan") if seconds is None else seconds}
