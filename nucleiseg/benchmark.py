"""Benchmarks on real DSB2018 data: weight maps and the score, against references, in one run.

Every figure is a time measured in the same process and run as its reference, so ratios hold
on any machine. numba compile time is measured once and reported apart from per-image times.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from scipy import ndimage

from .data.sources import LabelSource
from .metrics import matching_table, threshold_ties
from .references import kaggle_kernel_score, unet_weight_map_reference
from .weightmap import unet_weight_map

if TYPE_CHECKING:
    from .predict import Predictor

BIG_IMAGE = "a102535b0e88374bea4a1cfd9ee7cb3822ff54f4ab2a9845d428ec22f9ee2288"  # 603 x 1272, 375 nuclei


def machine() -> str:
    """One line naming this machine: CPU model, cores used, Python and library versions."""
    import numba
    import scipy

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores (numba threads {numba.get_num_threads()}), Python "
            f"{platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, numba {numba.__version__}")


def _best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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
            "from nucleiseg.weightmap import unet_weight_map\n"
            "from nucleiseg.references import unet_weight_map_reference\n"
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


def bench_weightmap(root: Path, image_ids: list[str] | None = None, reference: bool = True,
                    progress: Callable[[Iterable], Iterator] = iter) -> dict:
    """Per image: our weight map, the per-nucleus reference, one SciPy EDT; times in seconds.

    Returns {"machine", "compile_s", "rows": [...], "total": {...}}. Each row: image_id, shape,
    nuclei, ours_s (best of 3), edt_s (best of 3), reference_s (one run; None when skipped),
    max_abs_diff (ours vs reference).
    """
    source = LabelSource(root)
    ids = image_ids or source.ids()
    result = {"machine": machine(), "compile_s": compile_seconds(), "rows": []}
    for image_id in progress(ids):
        labels = source.get(image_id)
        ours_s, ours = _best_of(lambda: unet_weight_map(labels), 3)
        edt_s, _ = _best_of(lambda: ndimage.distance_transform_edt(labels != 0), 3)
        row = {"image_id": image_id, "shape": list(labels.shape), "nuclei": int(len(np.unique(labels)) - 1),
               "ours_s": ours_s, "edt_s": edt_s, "reference_s": None, "max_abs_diff": None}
        if reference:
            ref_s, ref = _best_of(lambda: unet_weight_map_reference(labels), 1)
            row.update(reference_s=ref_s, max_abs_diff=float(np.abs(ours - ref).max()))
        result["rows"].append(row)
    rows = result["rows"]
    total = {k: float(sum(r[k] for r in rows)) for k in ("ours_s", "edt_s")}
    total["reference_s"] = float(sum(r["reference_s"] for r in rows)) if reference else None
    total["max_abs_diff"] = max((r["max_abs_diff"] for r in rows), default=None) if reference else None
    total["n_images"] = len(rows)
    result["total"] = total
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


def _mosaic(labels_list: list[np.ndarray], tile: int, grid: int) -> np.ndarray:
    """A grid x grid mosaic of label images cropped/padded to tile x tile, labels kept distinct."""
    out = np.zeros((grid * tile, grid * tile), np.int32)
    offset = 0
    for k in range(grid * grid):
        lab = labels_list[k % len(labels_list)][:tile, :tile].astype(np.int32)
        r, c = divmod(k, grid)
        out[r * tile : r * tile + lab.shape[0], c * tile : c * tile + lab.shape[1]] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max(initial=0))
    return out


def imperfect_prediction(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in prediction: the truth shifted by (1, 2) px, every 10th object
    dropped, and labels shuffled, so IoUs spread over the thresholds."""
    rng = np.random.default_rng(seed)
    shifted = ndimage.shift(labels, (1, 2), order=0, mode="constant")
    top = int(labels.max(initial=0))
    perm = np.concatenate([[0], rng.permutation(top) + 1]).astype(np.int64)
    perm[1::10] = 0
    return perm[shifted].astype(np.int32)


def bench_score(root: Path, big_prediction: np.ndarray | None = None, huge: bool = True,
                stardist: bool = True) -> dict:
    """Our matching table vs StarDist's ``matching`` (all 10 thresholds) vs the Kaggle kernel.

    Cases: the 603 x 1272 image (375 nuclei) against ``big_prediction`` (default: an imperfect
    stand-in), a 4096 x 4096 mosaic of the 16 1024 x 1024 stage1_train label images, and (``huge``)
    a 16384 x 16384 mosaic of the same tiles, ours only (StarDist's dense overlap matrix and the
    Kaggle kernel's histogram are K_true x K_pred there).
    """
    source = LabelSource(root)
    big = source.get(BIG_IMAGE).astype(np.int32)
    cases = [("603x1272", big, big_prediction if big_prediction is not None else imperfect_prediction(big))]
    tiles = [source.get(i) for i in source.ids() if source.shape(i) == (1024, 1024)]
    m4 = _mosaic(tiles, 1024, 4)
    cases.append(("4096x4096 mosaic", m4, imperfect_prediction(m4)))
    if huge:
        m16 = _mosaic(tiles, 1024, 16)
        cases.append(("16384x16384 mosaic", m16, imperfect_prediction(m16)))
    try:
        from stardist.matching import matching as sd_matching
    except ImportError:
        sd_matching = None
    thresholds = [k / 20 for k in range(10, 20)]
    matching_table(big[:64, :64], big[:64, :64])  # compile / load the numba kernel once
    out = {"machine": machine(), "cases": []}
    for name, y_true, y_pred in cases:
        small = y_true.size <= 4096 * 4096
        ours_s, table = _best_of(lambda: matching_table(y_true, y_pred), 3 if small else 1)
        case = {"case": name, "objects_true": int(len(np.unique(y_true)) - 1),
                "objects_pred": int(len(np.unique(y_pred)) - 1), "ours_s": ours_s,
                "ours": [(r.tp, r.fp, r.fn) for r in table], "ours_score": float(np.mean([r.dsb_precision for r in table])),
                "stardist_s": None, "stardist": None, "kaggle_s": None, "kaggle_score": None}
        if stardist and sd_matching is not None and small:
            sd_s, sd = _best_of(lambda: sd_matching(y_true, y_pred, thresh=thresholds), 3)
            case.update(stardist_s=sd_s, stardist=[(s.tp, s.fp, s.fn) for s in sd],
                        stardist_score=float(np.mean([s.accuracy for s in sd])),
                        ties=threshold_ties(y_true, y_pred))
        if small:
            kg_s, kg = _best_of(lambda: kaggle_kernel_score(y_true, y_pred), 1)
            case.update(kaggle_s=kg_s, kaggle_score=kg)
        out["cases"].append(case)
    out["stardist_available"] = sd_matching is not None
    return out


def counts_agree(ours: list[tuple[int, int, int]], stardist: list[tuple[int, int, int]], ties: list[int]) -> str:
    """'yes' when TP/FP/FN equal StarDist's at every threshold without an IoU == t tie, and
    differ by at most the tie count where there are ties; else 'NO'."""
    for (tp, fp, fn), (stp, sfp, sfn), n_ties in zip(ours, stardist, ties):
        if n_ties == 0 and (tp, fp, fn) != (stp, sfp, sfn):
            return "NO"
        if abs(tp - stp) > n_ties:
            return "NO"
    n = sum(1 for t in ties if t)
    return "yes" + (f" ({sum(ties)} IoU == t ties at {n} thresholds)" if n else "")


def format_score(result: dict) -> str:
    lines = [f"machine: {result['machine']}",
             f"{'case':<20}{'objects':>13}{'ours ms':>10}{'StarDist ms':>12}{'Kaggle ms':>11}{'ours/SD':>9}"
             f"{'DSB ours':>10}{'DSB SD':>8}{'DSB Kaggle':>11}  TP/FP/FN = StarDist's"]
    for c in result["cases"]:
        sd, kg = c["stardist_s"], c["kaggle_s"]
        agree = "-" if c["stardist"] is None else counts_agree(c["ours"], c["stardist"], c["ties"])
        lines.append(
            f"{c['case']:<20}{c['objects_true']:>6}/{c['objects_pred']:<6}{c['ours_s'] * 1e3:>10.1f}"
            + (f"{sd * 1e3:>12.1f}" if sd is not None else f"{'-':>12}")
            + (f"{kg * 1e3:>11.1f}" if kg is not None else f"{'-':>11}")
            + (f"{c['ours_s'] / sd:>9.3f}" if sd is not None else f"{'-':>9}")
            + f"{c['ours_score']:>10.4f}"
            + (f"{c['stardist_score']:>8.4f}" if sd is not None else f"{'-':>8}")
            + (f"{c['kaggle_score']:>11.4f}" if kg is not None else f"{'-':>11}")
            + f"  {agree}")
    if not result["stardist_available"]:
        lines.append("StarDist not installed: pip install --no-deps stardist csbdeep six")
    return "\n".join(lines)


def device_name(device) -> str:
    """'cpu', or 'cuda (NVIDIA H100 80GB HBM3)': the GPU named, so every GPU figure says where it came from."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def bench_predict(predictor: "Predictor", images: dict[str, np.ndarray], repeat: int = 3, tta: tuple[bool, ...] = (False, True),
                  threads: int | None = None) -> dict:
    """Per image size: end-to-end ms per image (best of ``repeat``), split into network
    (normalisation, U-Net, softmax) and watershed, and megapixels per second."""
    import torch

    from .postprocess import probabilities_to_labels

    if threads:
        torch.set_num_threads(threads)
    rows = []
    for name, image in images.items():
        predictor.predict(image)  # warm-up
        for use_tta in tta:
            net_s, probs = _best_of(lambda: predictor.predict_probabilities(image, tta=use_tta), repeat)
            ws_s, labels = _best_of(lambda: probabilities_to_labels(probs, predictor.watershed), repeat)
            mp = image.shape[0] * image.shape[1] / 1e6
            rows.append({"image": name, "shape": list(image.shape[:2]), "tta": use_tta, "network_ms": net_s * 1e3,
                         "watershed_ms": ws_s * 1e3, "total_ms": (net_s + ws_s) * 1e3,
                         "megapixels_per_s": mp / (net_s + ws_s), "nuclei": int(labels.max(initial=0))})
    return {"machine": machine(), "device": device_name(predictor.device), "torch_threads": torch.get_num_threads(),
            "channels_last": predictor.channels_last, "compiled": predictor.network is not predictor.model,
            "rows": rows}


def format_predict(result: dict) -> str:
    lines = [f"machine: {result['machine']}; device {result['device']}, torch threads {result['torch_threads']}, "
             f"channels-last {'on' if result.get('channels_last') else 'off'}, "
             f"torch.compile {'on' if result.get('compiled') else 'off'}",
             f"{'image':<14}{'H x W':>11}{'TTA':>5}{'network ms':>12}{'watershed ms':>14}{'total ms':>10}{'MPx/s':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['image']:<14}{r['shape'][0]:>5}x{r['shape'][1]:<5}{'yes' if r['tta'] else 'no':>5}"
                     f"{r['network_ms']:>12.0f}{r['watershed_ms']:>14.0f}{r['total_ms']:>10.0f}"
                     f"{r['megapixels_per_s']:>8.2f}")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    """Results as JSON; NumPy scalars and arrays (e.g. from StarDist's counts) become plain numbers."""

    def plain(value):
        if isinstance(value, (np.generic, np.ndarray)):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return json.dumps(result, indent=1, default=plain)


def fluorescence_mosaic(dsb_root: Path | None, side: int, tile: int = 256) -> np.ndarray:
    """A (side, side) uint8 gray mosaic of 256 x 256 DSB2018 fluorescence images (cycled), or of
    crops of the bundled crowded sample when ``dsb_root`` is None. Neighbouring tiles alternate
    flips so nuclei run across tile seams rather than stopping at them."""
    from .data.images import read_image, to_gray_float
    from .data.sources import bundled_samples_dir, iter_image_paths
    from .data.split import modality

    tiles = []
    if dsb_root is not None:
        for _, path in iter_image_paths([dsb_root]):
            image = read_image(path)
            if image.shape[:2] == (tile, tile) and modality(image) == "fluorescence":
                tiles.append(to_gray_float(image).astype(np.uint8))
            if len(tiles) >= 64:
                break
    if not tiles:
        crowded = to_gray_float(read_image(next((bundled_samples_dir() / "images").glob("4596961c789d*.png"))))
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
    import torch

    from .batch import PredictOptions, predict_files
    from .blockwise import DEFAULT_HALO, block_edges, nuclei_cut_at_borders, predict_blockwise
    from .checkpoint import load_model
    from .cluster import connect, predict_on_cluster
    from .metrics import dsb_score
    from .predict import Predictor

    result: dict = {"machine": machine(), "n_images": len(images), "throughput": []}
    watershed = load_model(None)[1]["watershed"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        predict_files(images, Path(tmp) / "single", Predictor.from_file(device="cpu"), overlay=False)
        dt = time.perf_counter() - t0
        result["throughput"].append({"how": f"one process, {torch.get_num_threads()} torch threads",
                                     "seconds": dt, "images_per_s": len(images) / dt, "startup_s": 0.0})
        for w in workers:
            t0 = time.perf_counter()
            with connect(workers=w) as client:
                client.wait_for_workers(w)
                startup = time.perf_counter() - t0
                t1 = time.perf_counter()
                done = predict_on_cluster(client, images, Path(tmp) / f"w{w}", None, watershed,
                                          PredictOptions(overlay=False), device="cpu")
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
    result["mosaic"] = {"side": mosaic_side, "block_size": block_size, "halo": DEFAULT_HALO, "blocks": stats["blocks"],
                        "nuclei_whole": int(len(np.unique(whole)) - 1), "nuclei_blockwise": stats["nuclei"],
                        "dsb_score_blockwise_vs_whole": dsb_score(whole, blocks), "crossing_borders": crossing,
                        "cut_at_borders": cut, "truncated": stats["truncated"],
                        "whole_s": t_whole, "blockwise_s": t_blocks}
    if big_side:
        root = str(dsb_root) if dsb_root else None
        code = ("import time\nfrom pathlib import Path\nfrom nucleiseg.predict import Predictor\n"
                "from nucleiseg.blockwise import predict_blockwise\nfrom nucleiseg.benchmark import fluorescence_mosaic\n"
                f"root = {root!r}\nm = fluorescence_mosaic(Path(root) if root else None, {big_side})\n"
                "p = Predictor.from_file(device='cpu')\nt = time.perf_counter()\n"
                "labels, stats = predict_blockwise(p, m)\n"
                "print('RESULT', time.perf_counter() - t, stats['nuclei'], stats['blocks'])\n")
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
