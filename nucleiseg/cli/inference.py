"""``nucleiseg predict`` and ``nucleiseg show``."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import click

from ..inference import BACKENDS
from ..inference.blockwise import DEFAULT_BLOCK_SIZE
from ..inference.tiling import TILE_SIZE
from ..io import LABEL_FORMATS
from ..postprocess import WatershedParams
from ._common import device_option, diameter_option, field_docs, fail, main, precision_option, progress_bar

_WATERSHED_HELP = field_docs(WatershedParams)


class Region(click.ParamType):
    """X,Y,WIDTH,HEIGHT in pixels, four integers."""

    name = "X,Y,WIDTH,HEIGHT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            x, y, w, h = (int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected X,Y,WIDTH,HEIGHT (four integers), got {value!r}", param, ctx)
        return x, y, w, h


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--rle", type=click.Path(dir_okay=False, path_type=Path), help="Also write a Kaggle submission CSV.")
@click.option("--marker-threshold", type=float,
              help=_WATERSHED_HELP["marker_threshold"] + " [default: the model's tuned value]")
@click.option("--mask-threshold", type=float, help=_WATERSHED_HELP["mask_threshold"] + " [default: the model's tuned value]")
@click.option("--min-area", type=int, help=_WATERSHED_HELP["min_area"] + " [default: the model's tuned value]")
@click.option("--marker-h", type=float, help=_WATERSHED_HELP["marker_h"] + " [default: the model's value]")
@device_option
@click.option("--backend", type=click.Choice(BACKENDS), default=BACKENDS[0], show_default=True,
              help="What runs the network: PyTorch, or onnxruntime (the 'onnx' extra; --model may be an exported "
              ".onnx file).")
@click.option("--no-overlay", is_flag=True, help="Do not write <ImageId>_overlay.png.")
@click.option("--tta", is_flag=True, help="Average the 8 flips / 90-degree rotations (8x slower).")
@click.option("--skip-existing", is_flag=True, help="Skip images whose outputs are already in OUT (resume a run).")
@click.option("--measure", is_flag=True, help="Also write OUT/<ImageId>_nuclei.csv per image and OUT/summary.csv.")
@click.option("--pixel-size", type=float, help="Micrometres per pixel: areas in square micrometres (--measure), and "
              "label TIFFs written as OME-TIFF with this physical pixel size (scale bars in Fiji and napari).")
@click.option("--geojson", is_flag=True, help="Also write OUT/<ImageId>.geojson: one polygon per nucleus with its "
              "measurements, for QuPath (File > Import objects).")
@click.option("--geojson-gz", is_flag=True, help="Write the GeoJSON gzip-compressed, OUT/<ImageId>.geojson.gz "
              "(about 4x smaller; QuPath imports it as it is). Implies --geojson.")
@click.option("--channel", type=int, help="Use this page of multi-page TIFFs, or this channel of colour images.")
@click.option("--format", "label_format", type=click.Choice(LABEL_FORMATS), default=LABEL_FORMATS[0], show_default=True,
              help="Label image format: uint16 TIFF or 16-bit PNG.")
@click.option("--tile-size", type=int, default=None,
              help="Larger images are predicted in overlapping tiles of at most this size (multiple of 16) "
              f"[default: {TILE_SIZE['cpu']} on the CPU, {TILE_SIZE['cuda']} on CUDA].")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the network (pays off for many images of one size; first image slower).")
@click.option("--block-size", default=DEFAULT_BLOCK_SIZE, show_default=True,
              help="Images with a side over twice this are predicted block by block (whole-slide scans).")
@click.option("--workers", type=int, help="Spread the images over a local Dask cluster of N worker processes "
              "(needs the 'cluster' extra).")
@click.option("--scheduler", help="Spread the images over the workers of this Dask scheduler (e.g. tcp://host:8786); "
              "OUT and the inputs must be on storage they share.")
@diameter_option
@precision_option
@click.option("--level", default=0, show_default=True, type=click.IntRange(0),
              help="Slides: predict this pyramid level (0 = full resolution); GeoJSON and tables stay in level-0 pixels.")
@click.option("--region", type=Region(), help="Slides: predict only this rectangle, X,Y,WIDTH,HEIGHT in level-0 pixels.")
@click.option("--watershed-processes", type=click.IntRange(0), help="Slides and other images predicted block by "
              "block: worker processes that run each block's watershed (and a slide's measurements and outlines) "
              "while the network predicts the next blocks (0 = none). "
              "[default: none on a CPU, one per spare core on CUDA]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every image's result, diameter and "
              "scale) instead of the lines.")
def predict(inputs, out, model, rle, marker_threshold, mask_threshold, min_area, marker_h, device, backend, no_overlay, tta,
            skip_existing, measure, pixel_size, geojson, geojson_gz, channel, label_format, tile_size, compile_model,
            block_size, workers, scheduler, diameter, precision, level, region, watershed_processes, as_json) -> None:
    """Label the nuclei of INPUTS (image files, flat folders or DSB2018 folders).

    \b
    Writes OUT/<ImageId>.tif (uint16 label image, 0 = background, 1..N nuclei) and
    OUT/<ImageId>_overlay.png (each nucleus tinted and outlined in its own colour); --measure adds
    per-nucleus tables. With no INPUTS, runs on the bundled sample images and prints the DSB
    score against their bundled label images. Whole slides (pyramidal TIFF, SVS, NDPI, OME-TIFF)
    are read region by region, glass skipped, and written as they go.
    Examples:
      nucleiseg predict -o out
      nucleiseg predict my_images/ -o out --rle submission.csv
      nucleiseg predict scan.tif -o out --measure --pixel-size 0.325 --geojson
      nucleiseg predict big_nuclei/ -o out --diameter 45 --json
      nucleiseg predict plates/ -o out --workers 8
      nucleiseg predict my_images/ -o out --backend onnx --model model.onnx
      nucleiseg predict slide.svs -o out --geojson-gz --measure
    """
    from ..data.sources import bundled_samples_dir
    from ..inference.predictor import PredictOptions, load_model

    samples = not inputs
    inputs = [bundled_samples_dir() / "images"] if samples else list(inputs)
    try:
        predictor = load_model(model, device, backend, tile_size=tile_size, compile=compile_model,
                               **({"precision": precision} if backend == "torch" else {}))
        overrides = {"marker_threshold": marker_threshold, "mask_threshold": mask_threshold, "min_area": min_area,
                     "marker_h": marker_h}
        watershed = dataclasses.replace(predictor.watershed, **{k: v for k, v in overrides.items() if v is not None})
        options = PredictOptions(watershed, tta, channel, block_size, not no_overlay, skip_existing, measure,
                                 pixel_size, label_format, diameter, geojson or geojson_gz, level, region, geojson_gz,
                                 watershed_processes)
    except ValueError as exc:
        fail(str(exc))
    t0 = time.perf_counter()
    if workers or scheduler:
        from ..inference.cluster import connect, predict_on_cluster

        with connect(workers, scheduler) as client:
            results = predict_on_cluster(client, inputs, out, model, options, rle, device, tile_size, compile_model,
                                         progress_bar(description=f"predict (Dask, {scheduler or f'{workers} workers'})"),
                                         backend)
    else:
        from ..inference import batch

        results = batch.predict_files(inputs, out, predictor, options, rle,
                                      progress_bar(description=f"predict ({_runs_on(predictor)})"))
    if as_json:
        click.echo(json.dumps({"results": [dataclasses.asdict(r) for r in results], "out": str(out),
                               "seconds": time.perf_counter() - t0, "device": predictor.device.type,
                               "backend": predictor.backend}))
        sys.exit(1 if any(r.status == "failed" for r in results) else 0)
    _report(results, out, _runs_on(predictor), time.perf_counter() - t0, samples)


def _runs_on(predictor) -> str:
    """"cpu" / "cuda", with the backend named when it is not PyTorch and ", bf16" when the network
    runs in bf16 autocast."""
    bf16 = ", bf16" if predictor.autocast is not None else ""
    return predictor.device.type + ("" if predictor.backend == "torch" else f", {predictor.backend}") + bf16


def _report(results: list, out: Path, device: str, seconds: float, samples: bool) -> None:
    """One line per image (all of them for the samples or up to 20 images), the totals, and for
    the bundled samples their scores; exit status 1 if an image failed."""
    done = [r for r in results if r.status == "done"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    for r in (done if samples or len(results) <= 20 else []):
        click.echo(f"{r.image_id}: {r.n_nuclei} nuclei ({r.seconds * 1000:.0f} ms)")
    for r in failed:
        click.echo(f"{r.image_id}: FAILED {r.error}")
    for r in done:
        if r.error:
            click.echo(f"{r.image_id}: WARNING {r.error}")
    click.echo(f"{len(done)} images labeled ({sum(r.n_nuclei for r in done)} nuclei) in {seconds:.1f} s "
               f"on {device}, {len(skipped)} skipped (already done), {len(failed)} failed; results in {out}/")
    if samples:
        from ..data.sources import LabelSource, bundled_samples_dir
        from ..evaluation import score_sources

        report = score_sources(LabelSource(bundled_samples_dir() / "labels"), LabelSource(out))
        for p in report.per_image:
            click.echo(f"  DSB score {p['score']:.3f}  {p['image_id']} ({p['n_true']} true, {p['n_pred']} predicted)")
        click.echo(f"DSB score on the {report.n_images} bundled samples: {report.score:.4f}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--truth", "-t", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ground-truth label image: adds a TP / FP / FN panel at IoU 0.5 and the DSB score.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Figure file [default: IMAGE_show.png].")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model when LABELS is not given.")
@device_option
def show(image: Path, labels: Path | None, truth: Path | None, out: Path | None, model: Path | None,
         device: str) -> None:
    """Save a side-by-side figure: IMAGE, its labels (LABELS, or predicted), and the matching
    against --truth.

    \b
    Example:
      nucleiseg show cells.png out/cells.tif --truth truth/cells.tif -o cells_show.png
    """
    from ..data.images import read_image, read_label_image
    from ..figures import show_figure
    from ..inference.predictor import Predictor

    img = read_image(image)
    lab = read_label_image(labels) if labels else Predictor.from_file(model, device).predict(img)
    true = read_label_image(truth) if truth else None
    for name, arr in (("labels", lab), ("truth", true)):
        if arr is not None and arr.shape != img.shape[:2]:
            fail(f"{name} {arr.shape} and image {img.shape[:2]} differ in shape")
    out = out or image.with_name(image.stem + "_show.png")
    show_figure(out, img, lab, true, image.name)
    click.echo(f"wrote {out}")
