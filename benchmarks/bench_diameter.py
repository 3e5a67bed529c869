"""Rescaling by nucleus diameter, image by image: where does ``--diameter auto`` win or lose?

For every validation image (DSB2018 validation split, MoNuSeg 2018 validation; never the test
set for choosing) the model predicts at the original scale, at the scale of the estimated
diameter (:meth:`nucleiseg.inference.predictor.Predictor.scale_for`) and at the scale of the true
median equivalent diameter (the oracle), and each is scored with the DSB2018 metric. The rows
group images by the factor the estimate asked for (shrink, none, enlarge).

    python benchmarks/bench_diameter.py --dsb2018 stage1_train/ --monuseg monuseg2018/ [--model m.pt]
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from nucleiseg.bench.common import validation_items, validation_study_args
from nucleiseg.inference.predictor import PredictOptions, Predictor
from nucleiseg.labels import median_diameter
from nucleiseg.metrics import image_metrics


def main() -> None:
    args = validation_study_args(__doc__.splitlines()[0])
    predictor = Predictor.from_file(args.model, "cpu")
    rows = []
    for set_name, item in validation_items(args.dsb2018, args.monuseg):
        true_d = median_diameter(item.labels)[0]
        est_d, est_scale = predictor.scale_for(item.image, PredictOptions(diameter="auto"))
        scores = {}
        for name, options in (("none", PredictOptions(diameter=None)), ("auto", PredictOptions(diameter="auto")),
                              ("oracle", PredictOptions(diameter=true_d))):
            scores[name] = image_metrics(item.labels, predictor.predict(item.image, options)).dsb_score
        rows.append({"set": set_name, "image_id": item.image_id, "true_diameter": true_d, "estimate": est_d,
                     "scale": est_scale, **scores})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"model training diameter {predictor.config.nucleus_diameter:.1f} px")
    print("| set | images by the estimate's factor | n | none | auto | oracle (true diameter) |")
    print("|---|---|---|---|---|---|")
    for set_name in sorted({r["set"] for r in rows}):
        mine = [r for r in rows if r["set"] == set_name]
        for group, keep in (("all", lambda r: True), ("shrunk (factor < 1)", lambda r: r["scale"] < 1),
                            ("not rescaled", lambda r: r["scale"] == 1), ("enlarged (factor > 1)", lambda r: r["scale"] > 1)):
            g = [r for r in mine if keep(r)]
            if g:
                print(f"| {set_name} | {group} | {len(g)} | " + " | ".join(f"{np.mean([r[k] for r in g]):.4f}"
                                                                         for k in ("none", "auto", "oracle")) + " |")


if __name__ == "__main__":
    main()
