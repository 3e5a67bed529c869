"""Watershed studies (issue 14, items 4 and 5): one set of values or one per modality, and
splitting marker components by distance-transform h-maxima (``WatershedParams.marker_h``).

The model's validation probabilities are computed once (cached in OUTDIR); every image is then
scored with the DSB2018 metric at every point of a grid (marker threshold x mask threshold x
marker_h x minimum size). Tuning and scoring on the same images flatters every choice, more so
the ones with more values to tune, so the choices are compared by 2-fold cross-validation on the
validation images: the values are tuned on one half (each collection halved) and scored on the
other, both ways round, over ``--splits`` random halvings; the table gives the mean and the
spread (standard deviation) over the halvings. Scores are means over images, or with several
collections the mean of their means, as during training.

    python benchmarks/bench_watershed.py MODEL DATA [DATA ...] OUTDIR [--jobs 2] [--splits 20]

DATA: the training collections (``nucleiseg convert`` folders or labeled images); their
validation images are held out as in ``nucleiseg train``. Writes OUTDIR/scores.npz (a score per
image and grid point) and prints the Markdown table recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

MARKERS = (0.6, 0.7, 0.8, 0.9)
MASKS = (0.4, 0.5, 0.6, 0.7)
MARKER_HS = (0.0, 1.0, 2.0)
#: A modality gets values of its own only with at least this many images in the tuning half.
MIN_IMAGES_PER_MODALITY = 8


def validation_samples(model: str, data: list[str]):
    from nucleiseg.inference.predictor import load_model
    from nucleiseg.training.samples import collection_provenance, load_samples, split_samples

    predictor = load_model(model, device="cpu")
    norm = predictor.config.normalization
    samples = []
    for folder in data:
        name = collection_provenance(folder).name
        loaded = load_samples(folder, predictor.config.border_width, norm.p_low, norm.p_high, collection=name,
                              channels=norm.channels)
        samples += split_samples(loaded)[1]
    return predictor, samples


def _score_image(args) -> list[tuple]:
    path, labels, min_areas = args
    from nucleiseg.metrics import dsb_score
    from nucleiseg.postprocess import WatershedParams, drop_small_objects, probabilities_to_labels

    probabilities = np.load(path)["p"].astype(np.float32)
    rows = []
    for marker, mask, h in itertools.product(MARKERS, MASKS, MARKER_HS):
        labels_pred = probabilities_to_labels(probabilities, WatershedParams(marker, mask, 0, h))
        areas = np.bincount(labels_pred.ravel())
        for a in min_areas:
            rows.append((marker, mask, h, a, dsb_score(labels, drop_small_objects(labels_pred, a, areas))))
    return rows


def score_table(model: str, data: list[str], out: Path, jobs: int):
    """(images, grid, scores): images a dict of arrays (id, collection, modality), the grid
    points (marker, mask, h, min_area), and the scores, (images, grid points) float64."""
    out.mkdir(parents=True, exist_ok=True)
    cached = out / "scores.npz"
    if not cached.exists():
        predictor, samples = validation_samples(model, data)
        min_areas = sorted(set(predictor.config.min_area_quantiles.values()) | {predictor.watershed.min_area})
        t0 = time.perf_counter()
        jobs_args = []
        for s in samples:
            path = out / "probabilities" / f"{s.image_id}.npz"
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                np.savez_compressed(path, p=predictor.probabilities_of_normalized(s.image).astype(np.float16))
            jobs_args.append((path, s.labels, min_areas))
        print(f"probabilities of {len(samples)} images: {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:  # no fork under torch
            results = list(pool.map(_score_image, jobs_args))
        print(f"grid of {len(results[0])} points: {time.perf_counter() - t0:.0f} s", flush=True)
        np.savez(cached, image=[s.image_id for s in samples], collection=[s.collection for s in samples],
                 modality=[s.modality for s in samples], grid=np.array([r[:4] for r in results[0]]),
                 scores=np.array([[r[4] for r in rows] for rows in results]))
    z = np.load(cached)
    images = {k: z[k] for k in ("image", "collection", "modality")}
    return images, [tuple(g) for g in z["grid"]], z["scores"]


def _subset(images: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in images.items()}


def _weights(collections: np.ndarray) -> np.ndarray:
    """Per-image weights giving the mean of the collections' means."""
    names, counts = np.unique(collections, return_counts=True)
    per = dict(zip(names, counts))
    return np.array([1.0 / (len(names) * per[c]) for c in collections])


def _best(scores: np.ndarray, collections: np.ndarray, allowed: np.ndarray) -> int:
    means = _weights(collections) @ scores
    return int(np.flatnonzero(allowed)[np.argmax(means[allowed])])


def choose(scores, images, allowed, per_modality: bool) -> dict[str, int]:
    """Grid point per modality ('*' for all) tuned on the images (rows of ``scores``)."""
    chosen = {"*": _best(scores, images["collection"], allowed)}
    if per_modality:
        for m in np.unique(images["modality"]):
            rows = images["modality"] == m
            if rows.sum() >= MIN_IMAGES_PER_MODALITY:
                chosen[str(m)] = _best(scores[rows], images["collection"][rows], allowed)
    return chosen


def held_out(scores, images, chosen: dict[str, int]) -> float:
    cols = np.array([chosen.get(str(m), chosen["*"]) for m in images["modality"]])
    per_image = scores[np.arange(len(cols)), cols]
    return float(_weights(images["collection"]) @ per_image)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("paths", nargs="+", help="DATA [DATA ...] OUTDIR")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--splits", type=int, default=20)
    args = ap.parse_args()
    *data, out = args.paths
    images, grid, scores = score_table(args.model, data, Path(out), args.jobs)
    h = np.array([g[2] for g in grid])
    variants = {
        "one set of values, marker_h 0 (as bundled)": (h == 0, False),
        "one set of values, marker_h tuned": (np.ones_like(h, bool), False),
        "per modality, marker_h 0": (h == 0, True),
        "per modality, marker_h tuned": (np.ones_like(h, bool), True),
    }
    rng = np.random.default_rng(0)
    print(f"{len(scores)} validation images; {len(grid)} grid points; {args.splits} random halvings\n")
    print("| watershed values | tuned on all (in-sample) | 2-fold cross-validated, mean | spread (sd) | "
          "vs first row, paired: mean (sd) | values tuned on all |")
    print("|---|---|---|---|---|---|")
    halves = []
    for _ in range(args.splits):
        a = np.zeros(len(scores), bool)
        for c in np.unique(images["collection"]):
            idx = np.flatnonzero(images["collection"] == c)
            a[rng.permutation(idx)[: len(idx) // 2]] = True
        halves.append(a)
    reference = None
    for name, (allowed, per_modality) in variants.items():
        cv = []
        for a in halves:
            s = 0.0
            for tune_rows, test_rows in ((a, ~a), (~a, a)):
                chosen = choose(scores[tune_rows], _subset(images, tune_rows), allowed, per_modality)
                s += held_out(scores[test_rows], _subset(images, test_rows), chosen) / 2
            cv.append(s)
        reference = cv if reference is None else reference
        diff = np.array(cv) - np.array(reference)
        chosen = choose(scores, images, allowed, per_modality)
        described = "; ".join(f"{'all' if m == '*' else m}: marker {grid[i][0]:g}, mask {grid[i][1]:g}, "
                              f"marker_h {grid[i][2]:g} px, min area {grid[i][3]:g} px" for m, i in chosen.items())
        print(f"| {name} | {held_out(scores, images, chosen):.4f} | {np.mean(cv):.4f} | {np.std(cv):.4f} | "
              f"{diff.mean():+.4f} ({diff.std():.4f}) | {described} |")


if __name__ == "__main__":
    main()
