"""``nucleiseg score``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._common import main, progress_bar


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
