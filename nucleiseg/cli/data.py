"""``nucleiseg convert``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..targets.border import DEFAULT_BORDER_WIDTH
from ._common import main, progress_bar


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--border-width", default=DEFAULT_BORDER_WIDTH, show_default=True, help="Contact-border radius in pixels.")
@click.option("--to-rle", type=click.Path(dir_okay=False, path_type=Path), help="Also write the labels as a Kaggle CSV.")
@click.option("--name", help="Name of the collection, recorded in DST/provenance.json [default: recognised or the "
              "folder's name].")
@click.option("--licence", help="Licence of the collection, recorded in DST/provenance.json and in models trained on "
              "it [default: recognised for DSB2018 and MoNuSeg 2018, else unknown].")
def convert(src: Path, dst: Path, border_width: int, to_rle: Path | None, name: str | None, licence: str | None) -> None:
    """Convert the labeled images in SRC into label images and training arrays in DST.

    \b
    SRC layouts: DSB2018 (<id>/images/<id>.png + <id>/masks/*.png), images/ + masks/ (a label
    image of the same name per image), Cellpose (<name>.tif + <name>_masks.tif), Aperio
    ImageScope XML (<name>.tif + <name>.xml, polygons rasterised; see nucleiseg.data.aperio),
    GeoJSON as QuPath exports it (<name>.tif + <name>.geojson; see nucleiseg.geojson).
    Writes DST/labels/<ImageId>.tif (uint16), DST/train/<ImageId>.npz, DST/report.csv and
    DST/provenance.json (source, licence, layout, counts).
    Examples:
      nucleiseg convert stage1_train/ data/dsb2018 --to-rle labels.csv
      nucleiseg convert MoNuSegTestData/ data/monuseg_test
      nucleiseg convert my_annotations/ data/mine --name "our lab, 2026" --licence "internal use"
    """
    from ..targets.convert import convert_collection

    rows = convert_collection(src, dst, border_width, to_rle, progress=progress_bar("image"), name=name,
                              licence=licence)
    failed = [r for r in rows if r.status != "ok"]
    with_defects = [r for r in rows if r.status == "ok" and r.defects]
    for r in with_defects:
        click.echo(f"defects {r.image_id}: {r.defects}")
    for r in failed:
        click.echo(f"failed {r.image_id}: {r.defects}")
    n_nuclei = sum(r.n_nuclei for r in rows)
    click.echo(f"converted {len(rows) - len(failed)} images ({n_nuclei} nuclei), {len(with_defects)} with "
               f"annotation defects, {len(failed)} failed; report: {dst / 'report.csv'}")
    if failed:
        sys.exit(1)
