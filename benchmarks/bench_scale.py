"""Scale-out study: images per second on a local Dask cluster of 1 and 2 workers (and in one
process), and block-wise against whole-image prediction of a mosaic of DSB2018 fluorescence
tiles (DSB score between the two, nuclei cut at block borders), optionally a large mosaic's time
and peak memory. Needs the ``cluster`` extra; results are recorded in benchmarks/README.md.

    python benchmarks/bench_scale.py stage1_train/ [--big 8192] [--json FILE]

Without a DSB2018 folder it runs on the bundled samples (8 images, so use --images 8).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nucleiseg.bench.common import machine, to_json
from nucleiseg.data.images import read_image
from nucleiseg.data.sources import LabelSource, bundled_samples_dir, iter_image_paths
from nucleiseg.data.split import modality
from nucleiseg.inference.batch import predict_files
from nucleiseg.inference.blockwise import DEFAULT_HALO, block_edges, nuclei_cut_at_borders, predict_blockwise
from nucleiseg.inference.predictor import PredictOptions, Predictor
from nucleiseg.metrics import dsb_score
from nucleiseg.transforms import to_gray_float


def fluorescence_mosaic(dsb_root: Path | None, side: int, tile: int = 256) -> np.ndarray:
    """A (side, side) uint8 gray mosaic of 256 x 256 DSB2018 fluorescence images (cycled), or of
    crops of the bundled sample with the most nuclei when ``dsb_root`` is None. Neighbouring tiles alternate
    flips so nuclei run across tile seams rather than stopping at them."""
    tiles = []
    if dsb_root is not None:
        for _, path in iter_image_paths([dsb_root]):
            image = read_image(path)
            if image.shape[:2] == (tile, tile) and modality(image) == "fluorescence":
                tiles.append(to_gray_float(image).astype(np.uint8))
            if len(tiles) >= 64:
                break
    if not tiles:
        labels = LabelSource(bundled_samples_dir() / "labels")
        most = max(labels.ids(), key=lambda i: labels.get(i).max())
        crowded = to_gray_float(read_image(bundled_samples_dir() / "images" / f"{most}.png"))
        tiles = [crowded[r : r + tile, c : c + tile].astype(np.uint8) for r in (0, 264) for c in (0, 220, 440)]
    n = -(-side // tile)
    rows = []
    for i in range(n):
        row = [tiles[(i * n + j) % len(tiles)] for j in range(n)]
        row = [t[::-1] if (i + j) % 2 else t for j, t in enumerate(row)]
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])


def bench_scale(images: list[Path], workers: tuple[int, ...] = (1, 2), mosaic_side: int = 2048,
                block_size: int = 448, big_side: int = 0, dsb_root: Path | None = None) -> dict:
    """Images per second on a local Dask cluster of 1, 2, ... workers (and in one process), and
    block-wise against whole-image prediction of a fluorescence mosaic: DSB score between the
    two, nuclei crossing block borders and how many of them were cut, times and peak memory."""
    from nucleiseg.inference.cluster import connect, predict_on_cluster

    result: dict = {"machine": machine(), "n_images": len(images), "throughput": []}
    no_overlay = PredictOptions(overlay=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        predict_files(images, Path(tmp) / "single", Predictor.from_file(device="cpu"), no_overlay)
        dt = time.perf_counter() - t0
        result["throughput"].append({"how": f"one process, {torch.get_num_threads()} torch threads",
                                     "seconds": dt, "images_per_s": len(images) / dt, "startup_s": 0.0})
        for w in workers:
            t0 = time.perf_counter()
            with connect(workers=w) as client:
                client.wait_for_workers(w)
                startup = time.perf_counter() - t0
                t1 = time.perf_counter()
                done = predict_on_cluster(client, images, Path(tmp) / f"w{w}", None, no_overlay, device="cpu")
                dt = time.perf_counter() - t1
            assert all(r.status == "done" for r in done)
            result["throughput"].append({"how": f"Dask LocalCluster, {w} worker(s) x 1 thread", "seconds": dt,
                                         "images_per_s": len(images) / dt, "startup_s": startup})
    mosaic = fluorescence_mosaic(dsb_root, mosaic_side)
    predictor = Predictor.from_file(device="cpu", tile_size=-(-mosaic_side // 16) * 16 + 16)  # one piece
    t0 = time.perf_counter()
    whole = predictor.predict(mosaic)
    t_whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    blocks, stats = predict_blockwise(predictor, mosaic, block_size, DEFAULT_HALO)
    t_blocks = time.perf_counter() - t0
    rows, cols = block_edges(mosaic_side, block_size, DEFAULT_HALO), block_edges(mosaic_side, block_size, DEFAULT_HALO)
    crossing, cut = nuclei_cut_at_borders(whole, blocks, rows, cols)
    result["mosaic"] = {"side": mosaic_side, "block_size": block_size, "halo": DEFAULT_HALO, "blocks": stats.blocks,
                        "nuclei_whole": int(len(np.unique(whole)) - 1), "nuclei_blockwise": stats.nuclei,
                        "dsb_score_blockwise_vs_whole": dsb_score(whole, blocks), "crossing_borders": crossing,
                        "cut_at_borders": cut, "truncated": stats.truncated,
                        "whole_s": t_whole, "blockwise_s": t_blocks}
    if big_side:
        root = str(dsb_root) if dsb_root else None
        code = ("import sys, time\nfrom pathlib import Path\n"
                f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
                "from nucleiseg.inference.predictor import Predictor\n"
                "from nucleiseg.inference.blockwise import predict_blockwise\nfrom bench_scale import fluorescence_mosaic\n"
                f"root = {root!r}\nm = fluorescence_mosaic(Path(root) if root else None, {big_side})\n"
                "p = Predictor.from_file(device='cpu')\nt = time.perf_counter()\n"
                "labels, stats = predict_blockwise(p, m)\n"
                "print('RESULT', time.perf_counter() - t, stats.nuclei, stats.blocks)\n")
        out = subprocess.run([sys.executable, "-c", code + "\nfor line in open('/proc/self/status'):\n"
                              "    if line.startswith('VmHWM:'):\n        print('HWM', int(line.split()[1]) / 1024)\n"],
                             capture_output=True, text=True, check=True).stdout
        seconds, nuclei, blocks_n = next(l.split()[1:] for l in out.splitlines() if l.startswith("RESULT"))
        hwm = float(next(l.split()[1] for l in out.splitlines() if l.startswith("HWM")))
        result["big"] = {"side": big_side, "seconds": float(seconds), "nuclei": int(nuclei), "blocks": int(blocks_n),
                         "peak_memory_mb": hwm, "image_mb": big_side * big_side / 2**20,
                         "labels_mb": big_side * big_side * 4 / 2**20}
    return result


def format_scale(result: dict) -> str:
    lines = [f"machine: {result['machine']}", f"{result['n_images']} images:",
             f"  {'how':<44}{'seconds':>9}{'images/s':>10}{'startup s':>11}"]
    for r in result["throughput"]:
        lines.append(f"  {r['how']:<44}{r['seconds']:>9.1f}{r['images_per_s']:>10.2f}{r['startup_s']:>11.1f}")
    m = result["mosaic"]
    lines.append(f"mosaic {m['side']} x {m['side']}: block-wise ({m['blocks']} blocks of <= {m['block_size']} px, "
                 f"halo {m['halo']}) vs one piece: DSB {m['dsb_score_blockwise_vs_whole']:.4f}; nuclei "
                 f"{m['nuclei_blockwise']} vs {m['nuclei_whole']}; {m['crossing_borders']} cross a block border, "
                 f"{m['cut_at_borders']} cut; {m['blockwise_s']:.1f} s vs {m['whole_s']:.1f} s")
    if "big" in result:
        b = result["big"]
        lines.append(f"mosaic {b['side']} x {b['side']} block-wise: {b['seconds']:.0f} s, {b['nuclei']} nuclei, "
                     f"{b['blocks']} blocks, peak memory {b['peak_memory_mb']:.0f} MB (image {b['image_mb']:.0f} MB, "
                     f"labels {b['labels_mb']:.0f} MB)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line of this study (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dsb_dir", nargs="?", type=Path, help="stage1_train: its first --images images, and its "
                    "256 x 256 fluorescence images for the mosaic [default: the bundled samples]")
    ap.add_argument("--images", type=int, default=64, help="images for the throughput rows (default 64)")
    ap.add_argument("--workers", default="1,2", help="local Dask cluster sizes to time (default 1,2)")
    ap.add_argument("--mosaic", type=int, default=2048, help="side of the mosaic predicted both ways (default 2048)")
    ap.add_argument("--block-size", type=int, default=448,
                    help="block size for the mosaic (448: block borders fall inside the 256 px tiles, not on their seams)")
    ap.add_argument("--big", type=int, default=0, help="also predict a mosaic of this side block-wise (default blocks) "
                    "and report its peak memory")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.dsb_dir is not None:
        images = [p for _, p in iter_image_paths([args.dsb_dir])][: args.images]
    else:
        samples = sorted((bundled_samples_dir() / "images").glob("*.png"))
        if args.images > len(samples):
            ap.error(f"without DSB_DIR only the {len(samples)} bundled samples exist; use --images {len(samples)}")
        images = samples[: args.images]
    result = bench_scale(images, tuple(int(w) for w in args.workers.split(",")), args.mosaic, args.block_size,
                         args.big, args.dsb_dir)
    print(format_scale(result))
    if args.json:
        args.json.write_text(to_json(result))


if __name__ == "__main__":
    main()
