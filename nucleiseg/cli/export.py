"""``nucleiseg export``: the model as ONNX and as a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import fail, main

#: bioimageio.spec's severity of a warning (its notes are lower; Python logging's WARNING is 30).
WARNING_SEVERITY = 30


@main.command("export")
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--onnx", "onnx_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an ONNX file (network with softmax; nucleiseg's settings in its metadata).")
@click.option("--bioimageio", "bioimageio_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a bioimage.io model package (.zip) for deepImageJ, ilastik and the bioimage.io tools.")
@click.option("--name", help="Model name in the bioimage.io package [default: from the model's input channels].")
@click.option("--test/--no-test", default=True, show_default=True,
              help="Validate the bioimage.io package and run its test (bioimageio.core) after writing it.")
def export_cmd(model: Path | None, onnx_out: Path | None, bioimageio_out: Path | None, name: str | None,
               test: bool) -> None:
    """Export MODEL (a nucleiseg model file; default: the bundled model) for other tools.

    \b
    The network (U-Net + softmax) travels; the input normalisation is described in the
    bioimage.io package's terms where it can be and in its documentation where not; the
    watershed that turns probabilities into labels stays in nucleiseg (predict --backend onnx
    runs it around the ONNX file).
    Examples:
      nucleiseg export --onnx nucleiseg.onnx
      nucleiseg export model.pt --bioimageio nucleiseg-bioimageio.zip
    """
    if not (onnx_out or bioimageio_out):
        fail("nothing to export: give --onnx FILE and/or --bioimageio FILE.zip")
    if onnx_out:
        from ..export import export_onnx

        export_onnx(model, onnx_out)
        click.echo(f"wrote {onnx_out} ({onnx_out.stat().st_size / 1e6:.1f} MB)")
    if bioimageio_out:
        from ..bioimageio import export_bioimageio, test_package

        export_bioimageio(model, bioimageio_out, name)
        click.echo(f"wrote {bioimageio_out} ({bioimageio_out.stat().st_size / 1e6:.1f} MB)")
        if test:
            summary = test_package(bioimageio_out)
            failed = [d for d in summary.details if d.status != "passed"]
            click.echo(f"bioimageio.core validation and test run: {summary.status} "
                       f"({len(summary.details) - len(failed)} of {len(summary.details)} checks passed)")
            for d in summary.details:
                for w in d.warnings:
                    if w.severity >= WARNING_SEVERITY:  # lower ones are notes ("all elements agree")
                        click.echo(f"  warning: {w.msg.splitlines()[0]}")
                for e in d.errors:
                    click.echo(f"  error: {d.name}: {e.loc or ''} {e.msg}")
            if summary.status != "passed":
                raise SystemExit(1)
