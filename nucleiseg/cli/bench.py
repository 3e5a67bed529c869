"""``nucleiseg bench``: weight maps, the score, inference and training speed, timed against references."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import click
import numpy as np

from ..model.config import Block
from ._common import device_option, fail, main, precision_option, progress_bar

_JSON = click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also write the results as JSON.")


@main.group()
def bench() -> None:
    """Benchmarks on the bundled samples or your data, timed against references in the same run."""


@bench.command("weightmap")
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, help="Only the first N images.")
@click.option("--no-reference", is_flag=True, help="Skip the O(K H W) reference (about 450 s for all 664 "
              "stage1_train images).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak extra memory on the image with the most nuclei (fresh processes).")
@_JSON
def bench_weightmap_cmd(source: Path | None, limit: int | None, no_reference: bool, memory: bool,
                        as_json: Path | None) -> None:
    """U-Net weight maps: ours vs the per-nucleus reference vs one SciPy EDT, per image and in total.

    \b
    SOURCE: a DSB2018 folder, a folder of label images, a Kaggle CSV with Height/Width, or a
    folder with images/ and labels/ [default: the bundled samples].
    Example:
      nucleiseg bench weightmap stage1_train/
    """
    from ..bench.common import labeled_images, to_json
    from ..bench.weightmap import bench_weightmap, format_weightmap, peak_extra_memory_mb

    labels = labeled_images(source).labels
    ids = labels.ids()[:limit] if limit is not None else labels.ids()
    result = bench_weightmap(labels, ids, reference=not no_reference, progress=progress_bar())
    click.echo(format_weightmap(result))
    if memory and result["most_nuclei"]:
        most = result["most_nuclei"]
        label_image = labels.get(most)
        result["peak_extra_mb"] = {m: peak_extra_memory_mb(label_image, m) for m in ("ours", "edt", "reference")}
        click.echo(f"peak extra memory on {most[:12]} ({len(np.unique(label_image)) - 1} nuclei): "
                   + ", ".join(f"{m} {v:.0f} MB" for m, v in result["peak_extra_mb"].items()))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("score")
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--huge/--no-huge", default=True, show_default=True, help="Also score a 16384 x 16384 mosaic (ours only).")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path),
              help="Predict the image with the most nuclei with this model [default: bundled] for the first case.")
@_JSON
def bench_score_cmd(source: Path | None, huge: bool, model: Path | None, as_json: Path | None) -> None:
    """The DSB score: ours vs StarDist's matching vs the Kaggle-kernel formulation.

    \b
    SOURCE as for 'bench weightmap' [default: the bundled samples]. Cases: the image with the
    most nuclei against the model's prediction (when SOURCE has images), and 4 x 4 and 16 x 16
    mosaics of the 1024 x 1024 label images.
    StarDist is a benchmark-only extra: pip install --no-deps stardist csbdeep six
    StarDist counts a match at IoU >= t, the DSB2018 rule (and ours) at IoU > t; counts differ
    only for pairs whose IoU equals a threshold exactly.
    Example:
      nucleiseg bench score stage1_train/
    """
    from ..bench.common import labeled_images, to_json
    from ..bench.score import bench_score, format_score, score_cases
    from ..inference.predictor import Predictor

    predictor = Predictor.from_file(model, "cpu")
    result = bench_score(score_cases(labeled_images(source), predictor.predict, huge=huge))
    click.echo(format_score(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("predict")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@device_option
@click.option("--no-tta", is_flag=True, help="Skip the TTA rows.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="Channels-last tensors.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the network (compilation not timed).")
@click.option("--onnx", "with_onnx", is_flag=True, help="Also time the ONNX backend (onnxruntime) on the same images, "
              "row by row beside PyTorch, and compare its labels (the 'onnx' extra).")
@precision_option
@_JSON
def bench_predict_cmd(inputs: tuple[Path, ...], model: Path | None, device: str, no_tta: bool, channels_last: bool,
                      compile_model: bool, with_onnx: bool, precision: str, as_json: Path | None) -> None:
    """Inference speed per image size: one image of each distinct size among INPUTS.

    \b
    INPUTS: image files, flat folders or DSB2018 folders [default: the bundled samples, six sizes
    from 256 x 256 to 1024 x 1024].
    Example:
      nucleiseg bench predict
      nucleiseg bench predict --onnx --no-tta --precision fp32
    """
    from ..bench.common import to_json
    from ..bench.predict import bench_predict, format_predict, one_image_per_size
    from ..data.sources import bundled_samples_dir
    from ..inference.predictor import Predictor, load_model

    predictor = Predictor.from_file(model, device, channels_last=channels_last, compile=compile_model,
                                    precision=precision)
    others = (load_model(model, device, "onnx"),) if with_onnx else ()
    images = one_image_per_size(list(inputs) or [bundled_samples_dir() / "images"])
    result = bench_predict(predictor, images, tta=(False,) if no_tta else (False, True), others=others)
    click.echo(format_predict(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("train")
@click.argument("data", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--features", default="16,32,64,128,256", show_default=True, help="U-Net feature widths.")
@click.option("--block", default="conv", show_default=True, type=click.Choice(get_args(Block)),
              help="U-Net block (see 'nucleiseg train --help').")
@click.option("--input-channels", default="gray+haematoxylin", show_default=True,
              type=click.Choice(["gray", "gray+haematoxylin", "rgb"]), help="Network input.")
@click.option("--augment", default="shift", show_default=True,
              type=click.Choice(["none", "flips", "full", "heavy", "shift"]), help="Augmentation level.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(1), help="Timed steps per row (median).")
@_JSON
def bench_train_cmd(data: tuple[Path, ...], features: str, block: str, input_channels: str, augment: str,
                    steps: int, as_json: Path | None) -> None:
    """Training steps per second on this CPU: float32 vs bf16 autocast, batch drawing, prefetching.

    \b
    DATA: training collections as for 'nucleiseg train' [default: the bundled samples]; every
    image is used. Batch 16 x 128 x 128, the bundled model's recipe otherwise.
    Example:
      nucleiseg bench train data/dsb2018 data/monuseg_train
    """
    from ..bench.common import to_json
    from ..bench.train import bench_train, format_train
    from ..data.sources import bundled_samples_dir
    from ..training.config import TrainConfig
    from ..training.samples import load_collections

    try:
        cfg = TrainConfig(features=tuple(int(f) for f in features.split(",")), block=block,
                          input_channels=input_channels, augment=augment)
    except ValueError:
        fail(f"--features must be comma-separated integers, got {features!r}")
    train_set, val_set, _ = load_collections(list(data) or [bundled_samples_dir()], cfg.border_width, cfg.p_low,
                                             cfg.p_high, channels=cfg.input_channels, progress=progress_bar())
    result = bench_train(train_set + val_set, cfg, steps)
    click.echo(format_train(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("slide")
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--side", default=16384, show_default=True, type=click.IntRange(2048),
              help="Slide side, pixels (32768 makes about 1.07 gigapixels).")
@click.option("--tissue", default=0.6, show_default=True, type=click.FloatRange(0.05, 0.78),
              help="Fraction of the slide covered by tissue (an ellipse; glass around it).")
@click.option("--pixel-size", default=0.25, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Micrometres per pixel written into the slide (40x: about 0.25).")
@click.option("--whole-image/--no-whole-image", default=True, show_default=True,
              help="Also run the whole-image path (level 0 read into memory, as before issue 24).")
@precision_option
@device_option
@click.option("--watershed-processes", type=click.IntRange(0), help="Worker processes for the blocks' watershed, "
              "measurements and outlines in the lazy path. [default: none on a CPU, one per spare core on CUDA]")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Build the slide and outputs in this folder and keep them [default: a temporary folder].")
@_JSON
def bench_slide_cmd(source: Path | None, side: int, tissue: float, pixel_size: float, whole_image: bool,
                    precision: str, device: str, watershed_processes: int | None, keep: Path | None,
                    as_json: Path | None) -> None:
    """Whole-slide prediction: megapixels per second and peak memory, lazy slide path vs whole image.

    \b
    SOURCE: a folder of H&E images of at least 1000 x 1000 px, e.g. MoNuSeg 2018 train/images
    [default: the two bundled H&E samples]. The slide is a pyramidal JPEG-tiled TIFF with an Aperio
    description (MPP), predicted with 'nucleiseg predict SLIDE --geojson' in a fresh process.
    Example:
      nucleiseg bench slide monuseg2018/train/images --side 32768 --no-whole-image
    """
    from ..bench.common import to_json
    from ..bench.slide import bench_slide, format_slide

    try:
        result = bench_slide(source, side, tissue, pixel_size, whole_image, precision, keep, device, watershed_processes)
    except ValueError as exc:
        fail(str(exc))
    click.echo(format_slide(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("scale", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_scale_cmd(args) -> None:
    """Moved: the scale-out study is benchmarks/bench_scale.py in the source tree."""
    fail("'nucleiseg bench scale' moved to the source tree: run python benchmarks/bench_scale.py "
         + " ".join(args) + " from a clone of nucleiseg (it is our own study, not part of the package)")
