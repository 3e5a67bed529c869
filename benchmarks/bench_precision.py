"""bf16 against float32 inference on the CPU: do the labels agree, and how much faster is it?

For every validation image (DSB2018 validation split, MoNuSeg 2018 validation; never the test
set for choosing) the model predicts with the default options in float32 and in bf16 autocast
(``Predictor(precision=...)``; both estimate the diameter in float32, and an image within one
tile reuses the estimate's float32 pass). Reported: the DSB score of the bf16 labels taken
against the float32 labels (1.0 = the same nuclei, outlines to IoU 0.95), each precision's DSB
score against the truth, and the seconds each took; and ``full_pass_agreement``, the same
comparison with every image run afresh through the network in each precision at the scale
float32 chose (what a large image or a slide gets: bf16 for all its pixels). The rule (issue
24): bf16 is the default on a CPU with native bf16 only if the mean agreement is at least 0.99.

    python benchmarks/bench_precision.py --dsb2018 stage1_train/ --monuseg monuseg2018/ [--model m.pt]
"""

from __future__ import annotations

import json
import time

import numpy as np

from nucleiseg.bench.common import machine, validation_items, validation_study_args
from nucleiseg.inference.predictor import PredictOptions, Predictor, scaled_watershed
from nucleiseg.metrics import image_metrics
from nucleiseg.postprocess import probabilities_to_labels


def main() -> None:
    args = validation_study_args(__doc__.splitlines()[0])
    predictors = {p: Predictor.from_file(args.model, "cpu", precision=p) for p in ("fp32", "bf16")}
    options = PredictOptions()
    rows = []
    for set_name, item in validation_items(args.dsb2018, args.monuseg):
        row = {"set": set_name, "image_id": item.image_id}
        labels, full = {}, {}
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            segmentation = predictor.segment(item.image, options)
            row[f"{name}_s"] = time.perf_counter() - t0
            labels[name] = segmentation.labels
            row[f"{name}_dsb"] = image_metrics(item.labels, labels[name]).dsb_score
            scale = row.setdefault("scale", segmentation.scale)  # float32's
            x = predictor.normalize(item.image)
            full[name] = probabilities_to_labels(predictor.probabilities(x, scale=scale),
                                                 scaled_watershed(predictor.watershed, scale))
        row["agreement"] = image_metrics(labels["fp32"], labels["bf16"]).dsb_score
        row["full_pass_agreement"] = image_metrics(full["fp32"], full["bf16"]).dsb_score
        rows.append(row)
    out = {"machine": machine(), "rows": rows}
    for s in sorted({r["set"] for r in rows}) + ["all"]:
        sel = [r for r in rows if s in ("all", r["set"])]
        keys = ("agreement", "full_pass_agreement", "fp32_dsb", "bf16_dsb", "fp32_s", "bf16_s")
        summary = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        summary["min_agreement"] = float(min(r["agreement"] for r in sel))
        out[s] = summary
        print(f"{s}: {len(sel)} images, agreement (DSB of bf16 against fp32) mean {summary['agreement']:.4f} "
              f"min {summary['min_agreement']:.4f}, every pixel through bf16 {summary['full_pass_agreement']:.4f}; DSB vs truth fp32 {summary['fp32_dsb']:.4f} bf16 "
              f"{summary['bf16_dsb']:.4f}; seconds per image fp32 {summary['fp32_s']:.3f} bf16 {summary['bf16_s']:.3f}")
    print(machine())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
