"""``nucleiseg score`` and ``nucleiseg evaluate``."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import click

from ._common import device_option, diameter_option, main, precision_option, progress_bar


@main.command()
@click.argument("true", type=click.Path(exists=True, path_type=Path))
@click.argument("pred", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--per-image", is_flag=True, help="Also print each image's score.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw precision, recall, F1 and DSB against the IoU threshold into this PNG.")
def score(true: Path, pred: Path, as_json: bool, per_image: bool, plot: Path | None) -> None:
    """Score predictions PRED against ground truth TRUE with the DSB2018 metric.

    \b
    TRUE: a DSB2018 folder, a solution CSV, or a folder of label images.
    PRED: a folder of label images (<ImageId>.tif / .png) or a submission CSV.
    Images are matched by ImageId; a missing prediction counts as an empty one.
    Example:
      nucleiseg score stage1_train/ out/ --json
    """
    from ..data.sources import LabelSource
    from ..evaluation import format_table, score_sources

    report = score_sources(LabelSource(true), LabelSource(pred), progress=progress_bar())
    if plot is not None and report.per_threshold:
        from ..figures import score_plot

        score_plot(plot, report.per_threshold, f"{pred.name} vs {true.name}: DSB score {report.score:.4f} "
                                               f"over {report.n_images} images")
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        if per_image:
            for p in report.per_image:
                click.echo(f"{p['score']:.4f}  {p['image_id']}")
        click.echo(format_table(report))
        click.echo(f"DSB score {report.score:.4f} over {report.n_images} images"
                   + (f"; {len(report.missing)} without prediction (scored as empty)" if report.missing else "")
                   + (f"; {len(report.extra)} predictions without truth ignored" if report.extra else ""))
        for f in report.failed:
            click.echo(f"failed {f['image_id']}: {f['error']}")
        if report.failed:
            click.echo(f"{report.n_images} images scored, {len(report.failed)} failed")
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--dsb2018", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The DSB2018 stage1_train folder [default: $NUCLEISEG_DATA/dsb2018/stage1_train].")
@click.option("--monuseg", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The MoNuSeg 2018 folder holding train/ (images/ + masks/) and test/ (TIFF + XML) "
                   "[default: $NUCLEISEG_DATA/monuseg2018].")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also score the classical scikit-image baseline (Otsu, distance transform, watershed).")
@click.option("--tta", is_flag=True, help="Predict with the 8 flips / rotations averaged.")
@diameter_option
@device_option
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as Markdown.")
def evaluate(model: Path | None, dsb2018: Path | None, monuseg: Path | None, baseline: bool, tta: bool,
             diameter, device: str, precision: str, as_json: bool, out: Path | None) -> None:
    """Score a model (and the classical baseline) on the benchmark sets, in one table.

    \b
    Sets: the bundled samples (always); the DSB2018 validation split (with --dsb2018); the
    MoNuSeg 2018 validation subset of train and the MoNuSeg 2018 test set (with --monuseg). Per
    set: images, nuclei, DSB score, AP at IoU 0.5, AJI and PQ (means over images) and seconds
    per megapixel; per modality where a set has several. Each set's source and licence, and the
    collections the model was trained on, are listed under the table.
    Examples:
      nucleiseg evaluate --dsb2018 stage1_train/ --monuseg monuseg2018/ -o report.md
      NUCLEISEG_DATA=~/data nucleiseg evaluate --model model.pt --json
    """
    from ..evaluation import evaluate_method, evaluation_sets, format_evaluation
    from ..inference.classical import classical_labels
    from ..inference import DEFAULT_DIAMETER, DEFAULT_PRECISION
    from ..inference.predictor import PredictOptions, Predictor

    sets = evaluation_sets(dsb2018, monuseg)
    predictor = Predictor.from_file(model, device, precision=precision)
    name = (model.name if model else "bundled model") + (" + TTA" if tta else "") + \
        (f" (diameter {diameter or 'none'})" if diameter != DEFAULT_DIAMETER else "") + \
        (f" ({precision})" if precision != DEFAULT_PRECISION else "")
    methods = [(name, lambda image: predictor.predict(image, PredictOptions(tta=tta, diameter=diameter)))]
    if baseline:
        methods.append(("classical baseline", classical_labels))
    rows = [row for s in sets for method, segment in methods
            for row in evaluate_method(method, segment, s, progress_bar())]
    trained_on = predictor.config.licences() or ["not recorded in the model file"]
    notes = ([f"{s.name}: {len(s.image_ids)} images of {s.provenance} - {s.chosen}" for s in sets]
             + [f"{name} trained on: " + "; ".join(trained_on)])
    if as_json:
        click.echo(json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "sets": [
            {"name": s.name, "images": s.image_ids, "provenance": s.provenance.to_dict(), "chosen": s.chosen}
            for s in sets], "model": name, "trained_on": predictor.config.trained_on,
            "aggregation": "means over images; seconds per megapixel over all images of the row"}))
    else:
        click.echo(format_evaluation(rows))
        click.echo("\n".join(notes))
    if out is not None:
        from ..bench.common import device_name, machine
        from ..io import atomic_write

        text = (f"# nucleiseg evaluate\n\n`{shlex.join(['nucleiseg', *sys.argv[1:]])}` on {machine()}, device "
                f"{device_name(predictor.device)}\n\n{format_evaluation(rows, markdown=True)}\n\n"
                "Means over images. " + " ".join(f"{n}." for n in notes) + "\n")
        atomic_write(out, lambda tmp: tmp.write_text(text))
        click.echo(f"wrote {out}")
