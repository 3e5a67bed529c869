"""Whole-slide prediction speed and memory: the lazy slide path against the whole-image path.

A slide is built from real images (:class:`TileMosaic`: H&E images tiled with alternating flips
inside an elliptical tissue outline, glass around it) as a pyramidal, JPEG-tiled TIFF with an
SVS description and pixel size (:func:`~nucleiseg.data.slides.write_slide`), and predicted by
:func:`~nucleiseg.inference.slide.predict_slide_file` (what ``nucleiseg predict SLIDE --geojson``
runs) in a fresh process, whose peak resident memory is read from the kernel (``os.wait4``), with
the seconds spent reading, in the network, in the watershed and writing. The whole-image path (reading level 0 into memory, block-wise
prediction, GeoJSON from the whole label image: nucleiseg before issue 24) runs on the same file
in another fresh process when the slide fits in memory. The two label images are compared with
the DSB score (the lazy path takes its normalisation from the thumbnail level and estimates the
diameter on tissue, so they can differ a little).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..data.images import read_image
from ..data.sources import iter_image_paths
from .common import machine

#: Gray level of the glass around the tissue (a scanner's white balance).
GLASS = 238


class TileMosaic:
    """A (side, side, 3) uint8 image read like an array (``mosaic[r0:r1, c0:c1]``) but never held
    whole: ``tiles`` repeated with alternating flips (nuclei run across tile seams), kept inside
    an ellipse covering ``tissue`` of the area, glass (:data:`GLASS`) outside it."""

    def __init__(self, tiles: list[np.ndarray], side: int, tissue: float = 0.6) -> None:
        if not tiles or any(t.shape != tiles[0].shape for t in tiles):
            raise ValueError("tiles must be a non-empty list of equal-shape RGB images")
        self.tiles, self.side = tiles, side
        self.shape, self.dtype, self.ndim = (side, side, 3), np.dtype(np.uint8), 3
        # ellipse with semi-axes a (columns) and b = 0.8 a (rows) of area tissue * side^2
        self._a = min(np.sqrt(tissue * side * side / (np.pi * 0.8)), side / 2)
        self._b = 0.8 * self._a

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        r0, r1 = rows.start or 0, min(rows.stop, self.side)
        c0, c1 = cols.start or 0, min(cols.stop, self.side)
        th, tw = self.tiles[0].shape[:2]
        out = np.empty((r1 - r0, c1 - c0, 3), np.uint8)
        for tr in range(r0 // th, -(-r1 // th)):
            for tc in range(c0 // tw, -(-c1 // tw)):
                tile = self.tiles[(tr * 7 + tc * 3) % len(self.tiles)][:: (-1) ** tr, :: (-1) ** tc]
                y0, y1 = max(r0, tr * th), min(r1, (tr + 1) * th)
                x0, x1 = max(c0, tc * tw), min(c1, (tc + 1) * tw)
                out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = tile[y0 - tr * th : y1 - tr * th, x0 - tc * tw : x1 - tc * tw]
        yy, xx = np.ogrid[r0:r1, c0:c1]
        c = self.side / 2
        out[((yy - c) / self._b) ** 2 + ((xx - c) / self._a) ** 2 > 1] = GLASS
        return out


def he_tiles(source: Path | None, size: int = 1000) -> list[np.ndarray]:
    """RGB tiles of ``size`` x ``size`` from the H&E images of ``source`` (e.g. MoNuSeg 2018
    train/images, or any folder); None: the bundled H&E samples (two), tiled up to that size."""
    if source is None:
        from ..data.sources import bundled_samples_dir

        from ..data.split import modality

        images = [read_image(p) for p in sorted((bundled_samples_dir() / "images").glob("*.png"))]
        small = [i[:, :, :3] for i in images if modality(i) == "histology"]
        reps = [np.tile(t, (-(-size // t.shape[0]), -(-size // t.shape[1]), 1))[:size, :size] for t in small]
        return [np.ascontiguousarray(t) for t in reps]
    tiles = []
    for _, path in iter_image_paths([source]):
        image = read_image(path)
        if image.ndim == 3 and image.shape[0] >= size and image.shape[1] >= size:
            tiles.append(np.ascontiguousarray(image[:size, :size, :3]))
    if not tiles:
        raise ValueError(f"{source}: no RGB image of at least {size} x {size} pixels")
    return tiles


def _run(command: list[str]) -> tuple[float, float, str]:
    """(seconds, peak resident MB, stdout) of ``command`` in a fresh process: its own peak, from
    the kernel's accounting of that child (``os.wait4``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(command)} failed: {err.read().strip()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


_LAZY = """
import json, sys
from pathlib import Path
from nucleiseg.inference.predictor import PredictOptions, load_model
from nucleiseg.inference.slide import predict_slide_file
from nucleiseg.io import output_paths
path, out, precision, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
processes = None if sys.argv[5] == "auto" else int(sys.argv[5])
predictor = load_model(None, device, precision=precision)
r = predict_slide_file(predictor, path, output_paths(out, path.stem),
                       PredictOptions(geojson=True, overlay=False, watershed_processes=processes))
if predictor.device.type == "cuda":
    import torch
    device = f"cuda ({torch.cuda.get_device_name(predictor.device)})"
else:
    device = "cpu"
print(json.dumps({"n_nuclei": r.n_nuclei, "scale": r.scale, "unreadable": r.unreadable, "device": device,
                  "tissue_fraction": r.tissue_fraction, "stats": r.stats._asdict()}))
"""

_LEGACY = """
import json, sys, time
from pathlib import Path
import nucleiseg.inference.batch as batch
from nucleiseg.inference.predictor import PredictOptions, load_model
batch.is_slide = lambda path: False  # nucleiseg before issue 24: the whole level read into memory
path, out, precision, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
t0 = time.perf_counter()
results = batch.predict_files([path], out, load_model(None, device, precision=precision),
                              PredictOptions(geojson=True, overlay=False))
print(json.dumps({"results": [r.__dict__ for r in results], "seconds": time.perf_counter() - t0}))
"""


def bench_slide(source: Path | None, side: int, tissue: float = 0.6, pixel_size: float = 0.25,
                whole_image: bool = True, precision: str = "auto", keep: Path | None = None, device: str = "cpu",
                watershed_processes: int | None = None) -> dict:
    """Build a ``side`` x ``side`` slide from ``source``'s H&E images and time both paths
    (module docstring); the lazy path runs the network on ``device`` ("cpu", "cuda" or "auto")
    with ``watershed_processes`` worker processes (None: the default for the device). Returns a
    dict of the rows and the machine."""
    from ..data.images import read_label_image
    from ..data.slides import write_slide
    from ..metrics import image_metrics

    folder = Path(tempfile.mkdtemp(prefix="nucleiseg-bench-slide-")) if keep is None else keep
    folder.mkdir(parents=True, exist_ok=True)
    slide = folder / "slide.tif"
    mosaic = TileMosaic(he_tiles(source), side, tissue)
    t0 = time.perf_counter()
    write_slide(slide, mosaic, pixel_size, "svs", tile=256, compression="jpeg")
    result: dict = {"machine": machine(), "side": side, "megapixels": side * side / 1e6, "tissue": tissue,
                    "slide_MB": slide.stat().st_size / 1e6, "build_s": time.perf_counter() - t0, "rows": []}
    processes = "auto" if watershed_processes is None else str(watershed_processes)
    seconds, peak, out = _run([sys.executable, "-c", _LAZY, str(slide), str(folder / "lazy"), precision, device,
                               processes])
    info = json.loads(out)
    result["device"] = info["device"]
    result["rows"].append({"path": "slide, read lazily (this version)", "seconds": seconds, "peak_MB": peak,
                           "nuclei": info["n_nuclei"], "scale": info["scale"], "error": "; ".join(info["unreadable"]),
                           "tissue_blocks": info["tissue_fraction"], "stats": info["stats"]})
    if whole_image:
        seconds, peak, out = _run([sys.executable, "-c", _LEGACY, str(slide), str(folder / "whole"), precision,
                                   device])
        info = json.loads(out)["results"][0]
        result["rows"].append({"path": "whole level 0 in memory (before issue 24)", "seconds": seconds,
                               "peak_MB": peak, "nuclei": info["n_nuclei"], "scale": info["scale"],
                               "error": info["error"]})
        if side * side <= 300_000_000:
            a, b = read_label_image(folder / "lazy" / "slide.tif"), read_label_image(folder / "whole" / "slide.tif")
            result["dsb_between_paths"] = image_metrics(b, a).dsb_score
    for row in result["rows"]:
        row["megapixels_per_s"] = result["megapixels"] / row["seconds"]
    if keep is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return result


def format_slide(result: dict) -> str:
    """The rows as a text table, with the machine line."""
    lines = [f"slide {result['side']} x {result['side']} px ({result['megapixels']:.0f} megapixels, tissue "
             f"{result['tissue']:.0%}, JPEG-tiled SVS-style TIFF of {result['slide_MB']:.0f} MB, built in "
             f"{result['build_s']:.0f} s)",
             f"{'path':<44} {'seconds':>8} {'Mpx/s':>7} {'peak MB':>8} {'nuclei':>8} {'scale':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['path']:<44} {r['seconds']:>8.1f} {r['megapixels_per_s']:>7.2f} {r['peak_MB']:>8.0f} "
                     f"{r['nuclei']:>8} {r['scale']:>6.2f}" + (f"  ({r['error']})" if r["error"] else ""))
    stats = result["rows"][0].get("stats")
    if stats:
        lines.append(f"lazy path: {stats['blocks']} blocks predicted, {stats['skipped']} skipped (glass); seconds "
                     f"reading + normalising {stats['read_s']:.1f}, network {stats['network_s']:.1f}, watershed "
                     f"{stats['watershed_s']:.1f}, writing {stats['output_s']:.1f}")
    if "dsb_between_paths" in result:
        lines.append(f"DSB score of the lazy path's labels against the whole-image path's: {result['dsb_between_paths']:.4f}")
    lines.append(result["machine"] + (f"; network on {result['device']}" if "device" in result else ""))
    return "\n".join(lines)
