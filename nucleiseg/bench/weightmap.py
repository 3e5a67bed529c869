"""``nucleiseg bench weightmap``: U-Net weight maps (Ronneberger et al. 2015, eq. 2), ours against
the per-nucleus reference and against one SciPy EDT of the same image, per image and in total."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.sources import LabelSource
from ..progress import Progress, no_progress
from ..targets.weightmap import unet_weight_map
from .common import best_of, machine
from .references import unet_weight_map_reference


def compile_seconds() -> float:
    """Time of the first weight-map call on a tiny image (numba compile, or cache load)."""
    tiny = np.zeros((8, 8), np.uint16)
    tiny[1:3, 1:3], tiny[4:6, 4:6] = 1, 2
    t0 = time.perf_counter()
    unet_weight_map(tiny)
    return time.perf_counter() - t0


def peak_extra_memory_mb(labels: np.ndarray, method: str) -> float:
    """Peak resident memory added by one call of ``method`` ('ours', 'reference', 'edt'),
    measured in a fresh process: its VmHWM (the high-water mark of its own address space, in
    /proc/self/status) after minus before the call. getrusage's ru_maxrss is not used: Linux
    carries it over from the parent through fork and exec."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.npy"
        np.save(path, labels)
        code = (
            "import numpy as np\n"
            "def hwm():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM:'):\n"
            "            return int(line.split()[1])\n"
            "from scipy import ndimage\n"
            "from nucleiseg.targets.weightmap import unet_weight_map\n"
            "from nucleiseg.bench.references import unet_weight_map_reference\n"
            f"labels = np.load({str(path)!r})\n"
            "t = np.zeros((8, 8), np.uint16); t[1:3, 1:3] = 1; t[4:6, 4:6] = 2; unet_weight_map(t)\n"
            "before = hwm()\n"
            f"m = {method!r}\n"
            "out = (unet_weight_map(labels) if m == 'ours' else unet_weight_map_reference(labels) if m == 'reference'"
            " else ndimage.distance_transform_edt(labels != 0))\n"
            "print((hwm() - before) / 1024)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])


def bench_weightmap(source: LabelSource, image_ids: list[str] | None = None, reference: bool = True,
                    progress: Progress = no_progress) -> dict:
    """Per image: our weight map, the per-nucleus reference, one SciPy EDT; times in seconds.

    Returns {"machine", "compile_s", "rows": [...], "total": {...}, "most_nuclei": ImageId}. Each
    row: image_id, shape, nuclei, ours_s (best of 3), edt_s (best of 3), reference_s (one run;
    None when skipped), max_abs_diff (ours vs reference).
    """
    ids = image_ids or source.ids()
    result = {"machine": machine(), "compile_s": compile_seconds(), "rows": []}
    for image_id in progress(ids, len(ids), "weight maps"):
        labels = source.get(image_id)
        ours_s, ours = best_of(lambda: unet_weight_map(labels), 3)
        edt_s, _ = best_of(lambda: ndimage.distance_transform_edt(labels != 0), 3)
        row = {"image_id": image_id, "shape": list(labels.shape), "nuclei": int(len(np.unique(labels)) - 1),
               "ours_s": ours_s, "edt_s": edt_s, "reference_s": None, "max_abs_diff": None}
        if reference:
            ref_s, ref = best_of(lambda: unet_weight_map_reference(labels), 1)
            row.update(reference_s=ref_s, max_abs_diff=float(np.abs(ours - ref).max()))
        result["rows"].append(row)
    rows = result["rows"]
    total = {k: float(sum(r[k] for r in rows)) for k in ("ours_s", "edt_s")}
    total["reference_s"] = float(sum(r["reference_s"] for r in rows)) if reference else None
    total["max_abs_diff"] = max((r["max_abs_diff"] for r in rows), default=None) if reference else None
    total["n_images"] = len(rows)
    result["total"] = total
    result["most_nuclei"] = max(rows, key=lambda r: r["nuclei"])["image_id"] if rows else None
    return result


def format_weightmap(result: dict) -> str:
    lines = [f"machine: {result['machine']}", f"numba compile (or cache load), once: {result['compile_s']:.2f} s",
             f"{'image':<14}{'H x W':>11}{'nuclei':>7}{'ours ms':>9}{'EDT ms':>8}{'ref ms':>9}"
             f"{'ours/EDT':>9}{'ref/ours':>9}{'max|diff|':>10}"]

    def line(name, shape, nuclei, r):
        ref = r["reference_s"]
        return (f"{name:<14}{shape:>11}{nuclei:>7}{r['ours_s'] * 1e3:>9.2f}{r['edt_s'] * 1e3:>8.2f}"
                + (f"{ref * 1e3:>9.1f}" if ref is not None else f"{'-':>9}")
                + f"{r['ours_s'] / r['edt_s']:>9.2f}"
                + (f"{ref / r['ours_s']:>9.0f}" if ref is not None else f"{'-':>9}")
                + (f"{r['max_abs_diff']:>10.1e}" if r["max_abs_diff"] is not None else f"{'-':>10}"))

    for r in result["rows"]:
        lines.append(line(r["image_id"][:12], f"{r['shape'][0]}x{r['shape'][1]}", r["nuclei"], r))
    t = result["total"]
    lines.append(line(f"total ({t['n_images']})", "", sum(r["nuclei"] for r in result["rows"]), t))
    return "\n".join(lines)
