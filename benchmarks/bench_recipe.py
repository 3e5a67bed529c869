"""Training-recipe studies: which choices raise the validation DSB score per CPU-minute.

Each variant is the default ``nucleiseg train`` recipe with one thing changed, trained on the
same data for the same CPU time: ``--steps BASE_STEPS x cost``, where ``cost`` is the variant's
seconds per step relative to the default (measured on one thread: 1.0 for everything that does
not change the network or the crop, about 0.54 for the narrow U-Net, 2.5 for the wide one). The
runs go two at a time, one thread each (``OMP_NUM_THREADS=1``), so they do not share a core.
Every run validates every ``BASE_STEPS / 2`` steps on the fixed 101-image split, keeps the best
checkpoint and tunes its watershed there, exactly as the bundled model was made.

    python benchmarks/bench_recipe.py DATA [DATA ...] OUTDIR [--study recipe|shift] [--steps 600]
                                      [--only NAME,NAME] [--jobs 2]
    python benchmarks/bench_recipe.py DATA OUTDIR --report      # the table of the finished runs

Studies: ``recipe`` (issue 4; DATA a ``nucleiseg convert`` folder of stage1_train) and ``shift``
(issue 14, what holds up on unseen sources; DATA the stage1_train and MoNuSeg 2018 train
collections, validated apart). The first variant of a study and its ``-seedN`` copies are the
reference whose spread is the run-to-run noise. Writes OUTDIR/<variant>.pt (and the
training logs), OUTDIR/results.jsonl (one JSON object per finished variant) and prints the
Markdown table recorded in benchmarks/README.md. A variant whose model file already exists is
not trained again, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# name: (what changes, extra `nucleiseg train` options, relative cost of one step)
RECIPE: dict[str, tuple[str, list[str], float]] = {
    "default": ("default recipe (bundled model's)", [], 1.0),
    "default-seed1": ("default recipe, seed 1 (run-to-run spread)", ["--seed", "1"], 1.0),
    "default-seed2": ("default recipe, seed 2 (run-to-run spread)", ["--seed", "2"], 1.0),
    "weight-map": ("cross-entropy weighted by the U-Net weight map (w0 10, sigma 5 px)", ["--weight-map"], 1.0),
    "no-dice": ("cross-entropy only (no soft Dice)", ["--dice-weight", "0"], 1.0),
    "uniform": ("uniform image sampling", ["--sampling", "uniform"], 1.0),
    "aug-flips": ("augmentation: flips / rotations only", ["--augment", "flips"], 1.0),
    "aug-heavy": ("augmentation: + elastic and blur", ["--augment", "heavy"], 1.0),
    "constant-lr": ("constant learning rate after warm-up", ["--schedule", "constant"], 1.0),
    "ema": ("EMA of the weights, decay 0.99", ["--ema", "0.99"], 1.0),
    "border-1": ("border width 1 px", ["--border-width", "1"], 1.0),
    "border-3": ("border width 3 px", ["--border-width", "3"], 1.0),
    "crop256": ("crops 256 x 256, batch 4 (same pixels per step)", ["--crop-size", "256", "--batch-size", "4"], 1.07),
    "narrow": ("U-Net widths (8 .. 128), 0.49 M parameters", ["--features", "8,16,32,64,128"], 0.54),
    "wide": ("U-Net widths (24 .. 384), 4.4 M parameters", ["--features", "24,48,96,192,384"], 2.5),
    "uniform-constant": ("uniform sampling and constant learning rate together",
                         ["--sampling", "uniform", "--schedule", "constant"], 1.0),
}


SHIFT: dict[str, tuple[str, list[str], float]] = {
    "gray": ("gray input (the bundled model's)", [], 1.0),
    "gray-seed1": ("gray input, seed 1 (run-to-run spread)", ["--seed", "1"], 1.0),
    "gray+haematoxylin": ("gray + haematoxylin input", ["--input-channels", "gray+haematoxylin"], 1.0),
    "gray+haematoxylin-seed1": ("gray + haematoxylin input, seed 1", ["--input-channels", "gray+haematoxylin",
                                                                     "--seed", "1"], 1.0),
    "rgb": ("RGB input", ["--input-channels", "rgb"], 1.0),
    "rgb-seed1": ("RGB input, seed 1", ["--input-channels", "rgb", "--seed", "1"], 1.0),
    "gray+haematoxylin-shift": ("gray + haematoxylin, augmentation for unseen sources (--augment shift)",
                                ["--input-channels", "gray+haematoxylin", "--augment", "shift"], 1.0),
    "gray+haematoxylin-shift-seed1": ("gray + haematoxylin, --augment shift, seed 1",
                                      ["--input-channels", "gray+haematoxylin", "--augment", "shift", "--seed", "1"], 1.0),
    "gray+haematoxylin-weights-3-1": ("gray + haematoxylin, DSB2018 drawn 3x as often as MoNuSeg",
                                      ["--input-channels", "gray+haematoxylin", "--collection-weights", "3,1"], 1.0),
    "gray+haematoxylin-weights-3-1-seed1": ("gray + haematoxylin, weights 3:1, seed 1",
                                            ["--input-channels", "gray+haematoxylin", "--collection-weights", "3,1",
                                             "--seed", "1"], 1.0),
    "rgb-shift": ("RGB input, --augment shift", ["--input-channels", "rgb", "--augment", "shift"], 1.0),
    "rgb-shift-seed1": ("RGB input, --augment shift, seed 1",
                        ["--input-channels", "rgb", "--augment", "shift", "--seed", "1"], 1.0),
}

STUDIES = {"recipe": RECIPE, "shift": SHIFT}


def run_variant(name: str, variants: dict, data: list[Path], outdir: Path, base_steps: int) -> dict:
    """Train one variant in a subprocess on one thread; return its summary (plain data)."""
    what, extra, cost = variants[name]
    model = outdir / f"{name}.pt"
    steps = max(1, round(base_steps / cost))
    if not model.exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "nucleiseg", "-q", "train", *map(str, data), "--out", str(model), "--steps", str(steps),
               "--val-every", str(max(1, steps // 2)), "--device", "cpu", *extra]
        t0 = time.perf_counter()
        with open(outdir / f"{name}.log", "w") as log:
            subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        wall = time.perf_counter() - t0
    else:
        wall = float("nan")
    from nucleiseg.model.file import read_model_file

    config = read_model_file(model).config
    v = config.validation
    return {"name": name, "what": what, "options": " ".join(extra), "cost": cost, "steps": steps,
            "train_minutes": config.training_minutes, "wall_minutes": wall / 60, "best_step": v.step,
            "score": v.score, "score_untuned": v.score_default_watershed, "per_modality": v.per_modality,
            "per_collection": v.per_collection,
            "watershed": config.watershed.to_dict()}


def table(rows: list[dict], reference: str) -> str:
    """Markdown table, best tuned score first; deltas against the mean of the ``reference`` runs
    (one per seed), whose spread is the run-to-run noise; a column per validation collection."""
    base = [r["score"] for r in rows if r["name"] == reference or r["name"].startswith(reference + "-seed")]
    mean = sum(base) / len(base) if base else float("nan")
    collections = sorted({c for r in rows for c in r.get("per_collection", {})})
    lines = [f"Reference ({reference}): mean {mean:.4f} over {len(base)} seed(s), range {min(base, default=0):.4f} - "
             f"{max(base, default=0):.4f}.", "",
             "| variant | steps | minutes | val DSB (tuned) | vs reference | untuned | "
             + "".join(f"{c} | " for c in collections) + "fluorescence | histology | brightfield |",
             "|" + "---|" * (9 + len(collections))]
    for r in sorted(rows, key=lambda r: -r["score"]):
        pm, pc = r["per_modality"], r.get("per_collection", {})
        lines.append(f"| {r['what']} | {r['steps']} | {r['train_minutes']:.1f} | {r['score']:.4f} | "
                     f"{r['score'] - mean:+.4f} | {r['score_untuned']:.4f} | "
                     + "".join(f"{pc.get(c, float('nan')):.3f} | " for c in collections)
                     + f"{pm.get('fluorescence', float('nan')):.3f} | {pm.get('histology', float('nan')):.3f} | "
                     f"{pm.get('brightfield', float('nan')):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, nargs="+", help="the collection(s) to train on")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--study", choices=sorted(STUDIES), default="recipe", help="which variants (default recipe)")
    ap.add_argument("--steps", type=int, default=600, help="steps of the default recipe; others get steps / cost")
    ap.add_argument("--only", help="comma-separated variant names (default: all, in the order listed)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    ap.add_argument("--report", action="store_true", help="only print the table of OUTDIR/results.jsonl")
    args = ap.parse_args()
    variants = STUDIES[args.study]
    if args.report:
        latest = {}
        for line in (args.outdir / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            latest[row["name"]] = row
        print(table(list(latest.values()), next(iter(variants))))
        return
    names = args.only.split(",") if args.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_variant, n, variants, args.data, args.outdir, args.steps): n for n in names}
        for future in as_completed(futures):
            try:
                row = future.result()
            except subprocess.CalledProcessError as exc:  # report, keep the other runs going
                print(f"{futures[future]}: training failed (exit {exc.returncode}); see its .log", flush=True)
                continue
            rows.append(row)
            with open(args.outdir / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['name']}: val DSB {row['score']:.4f} (untuned {row['score_untuned']:.4f}), "
                  f"{row['steps']} steps, {row['train_minutes']:.1f} min", flush=True)
    print(table(rows, next(iter(variants))))


if __name__ == "__main__":
    main()
