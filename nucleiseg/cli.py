"""The ``nucleiseg`` command line: convert, train, predict, score.

A thin layer over the library: each command parses options, calls the library, and reports.
Errors nucleiseg raises on purpose (bad files, bad options) are printed as one line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from .errors import NucleisegError


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _bar(iterable=None, **kwargs):
    """A tqdm progress bar on stderr, silent with --quiet."""
    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
    return tqdm(iterable, file=sys.stderr, disable=quiet, **kwargs)


class _Group(click.Group):
    """Unexpected errors become one line (with their type) unless --verbose asks for the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if (ctx.obj or {}).get("verbose"):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc} (--verbose shows the traceback)") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="nucleiseg")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """Find every cell nucleus in microscopy images and give each its own label.

    \b
    Example:
      nucleiseg predict -o out          # bundled model on the bundled sample images
      nucleiseg -q score truth/ out/    # no progress bars
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose}


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--border-width", default=2, show_default=True, help="Contact-border radius in pixels.")
@click.option("--to-rle", type=click.Path(dir_okay=False, path_type=Path), help="Also write the labels as a Kaggle CSV.")
def convert(src: Path, dst: Path, border_width: int, to_rle: Path | None) -> None:
    """Convert a DSB2018 folder SRC into label images and training arrays in DST.

    \b
    Writes DST/labels/<ImageId>.tif (uint16), DST/train/<ImageId>.npz and DST/report.csv.
    Example:
      nucleiseg convert ../shared/dsb2018/stage1_train data/dsb2018 --to-rle labels.csv
    """
    from .data.convert import convert_dsb2018

    try:
        rows = convert_dsb2018(src, dst, border_width, to_rle,
                               progress=lambda it, total: _bar(it, total=total, desc="convert", unit="image"))
    except NucleisegError as exc:
        _fail(str(exc))
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


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Model file to write.")
@click.option("--epochs", type=float, help="Stop after N epochs (an epoch = training images / batch size steps).")
@click.option("--steps", type=int, help="Stop after N optimizer steps.")
@click.option("--minutes", type=float, help="Stop after M minutes of training (validation included).")
@click.option("--features", default="16,32,64,128,256", show_default=True, help="U-Net feature widths per level.")
@click.option("--crop-size", default=128, show_default=True, help="Training crop size in pixels.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=2e-3, show_default=True, help="Peak learning rate (AdamW, warm-up then cosine).")
@click.option("--border-width", default=2, show_default=True, help="Contact-border radius in pixels.")
@click.option("--weight-map", is_flag=True, help="Weight the cross-entropy per pixel by the U-Net weight map.")
@click.option("--w0", default=10.0, show_default=True, help="Weight-map border weight (with --weight-map).")
@click.option("--sigma", default=5.0, show_default=True, help="Weight-map border width, pixels (with --weight-map).")
@click.option("--dice-weight", default=1.0, show_default=True, help="Weight of the soft Dice term (0 = cross-entropy only).")
@click.option("--sampling", type=click.Choice(["balanced", "uniform"]), default="balanced", show_default=True,
              help="Image sampling: balanced over modalities and sizes, or uniform.")
@click.option("--augment", type=click.Choice(["none", "flips", "full", "heavy"]), default="full", show_default=True,
              help="Augmentation level (heavy = full + elastic + blur).")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="Learning rate after warm-up.")
@click.option("--ema", default=0.0, show_default=True, help="Decay of an exponential moving average of the weights "
              "(e.g. 0.999; 0 = off). The average is what is validated and saved.")
@click.option("--no-tune", is_flag=True, help="Keep the default watershed values instead of tuning them at the end.")
@click.option("--sync-bn", is_flag=True, help="SyncBatchNorm across processes (under torchrun).")
@click.option("--val-every", default=500, show_default=True, help="Validate every N steps.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue from <out>.resume.pt if it exists.")
def train(data: Path, out: Path, epochs, steps, minutes, features, crop_size, batch_size, lr, border_width, weight_map,
          w0, sigma, dice_weight, sampling, augment, schedule, ema, no_tune, sync_bn, val_every, seed, device,
          resume) -> None:
    """Train the U-Net on DATA (a 'nucleiseg convert' folder or a DSB2018 folder).

    \b
    The fixed DSB2018 validation split is held out and scored with the DSB metric as training
    goes; the best checkpoint goes to --out, a resumable state to <out>.resume.pt.
    Default budget when none is given: 50 epochs. Under torchrun, trains with
    DistributedDataParallel (NCCL on GPUs, gloo on CPU); --batch-size is per process.
    Examples:
      nucleiseg train data/dsb2018 --out model.pt --minutes 90
      torchrun --standalone --nproc_per_node 4 -m nucleiseg train data/dsb2018 --out model.pt
    """
    from .predict import choose_device
    from .train import TrainConfig
    from .train import train as run_training

    cfg = TrainConfig(features=tuple(int(f) for f in features.split(",")), crop_size=crop_size, batch_size=batch_size,
                      lr=lr, border_width=border_width, epochs=epochs, steps=steps, minutes=minutes,
                      weight_map=weight_map, w0=w0, sigma=sigma, dice_weight=dice_weight, sampling=sampling,
                      augment=augment, schedule=schedule, ema=ema, tune=not no_tune, sync_bn=sync_bn,
                      val_every=val_every, seed=seed)
    dev = choose_device(device)
    try:
        result = run_training(data, out, cfg, dev, resume=resume, log=lambda m: tqdm.write(m, file=sys.stderr),
                              progress_bar=lambda total: _bar(total=total, desc=f"train ({dev.type})", unit="step",
                                                               mininterval=5))
    except NucleisegError as exc:
        _fail(str(exc))
    if "validation" in result:  # rank 0 (or a single process) reports
        v = result["validation"]
        click.echo(f"wrote {out}: validation DSB {v['score']:.4f} on {len(v['ids'])} images")


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--rle", type=click.Path(dir_okay=False, path_type=Path), help="Also write a Kaggle submission CSV.")
@click.option("--marker-threshold", type=float, help="Watershed marker threshold [default: the model's tuned value].")
@click.option("--mask-threshold", type=float, help="Foreground threshold [default: the model's tuned value].")
@click.option("--min-area", type=int, help="Smallest nucleus kept, pixels [default: the model's tuned value].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-overlay", is_flag=True, help="Do not write <ImageId>_overlay.png.")
@click.option("--tta", is_flag=True, help="Average the 8 flips / 90-degree rotations (8x slower).")
@click.option("--skip-existing", is_flag=True, help="Skip images whose outputs are already in OUT (resume a run).")
@click.option("--measure", is_flag=True, help="Also write OUT/<ImageId>_nuclei.csv per image and OUT/summary.csv.")
@click.option("--pixel-size", type=float, help="Micrometres per pixel, for areas in square micrometres (--measure).")
@click.option("--channel", type=int, help="Use this page of multi-page TIFFs, or this channel of colour images.")
@click.option("--format", "label_format", type=click.Choice(["tif", "png"]), default="tif", show_default=True,
              help="Label image format: uint16 TIFF or 16-bit PNG.")
@click.option("--tile-size", default=1024, show_default=True,
              help="Larger images are predicted in overlapping tiles of at most this size (multiple of 16).")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the network (pays off for many images of one size; first image slower).")
@click.option("--block-size", default=2048, show_default=True,
              help="Images with a side over twice this are predicted block by block (whole-slide scans).")
@click.option("--workers", type=int, help="Spread the images over a local Dask cluster of N worker processes.")
@click.option("--scheduler", help="Spread the images over the workers of this Dask scheduler (e.g. tcp://host:8786); "
              "OUT and the inputs must be on storage they share.")
def predict(inputs, out, model, rle, marker_threshold, mask_threshold, min_area, device, no_overlay, tta,
            skip_existing, measure, pixel_size, channel, label_format, tile_size, compile_model, block_size, workers,
            scheduler) -> None:
    """Label the nuclei of INPUTS (image files, flat folders or DSB2018 folders).

    \b
    Writes OUT/<ImageId>.tif (uint16 label image, 0 = background, 1..N nuclei) and
    OUT/<ImageId>_overlay.png (each nucleus tinted and outlined in its own colour); --measure adds
    per-nucleus tables. With no INPUTS, runs on the bundled sample images and prints the DSB
    score against their bundled label images.
    Examples:
      nucleiseg predict -o out
      nucleiseg predict my_images/ -o out --rle submission.csv
      nucleiseg predict scan.tif -o out --measure --pixel-size 0.325
      nucleiseg predict plates/ -o out --workers 8
    """
    from .batch import predict_files, score_sources
    from .data.sources import LabelSource, bundled_samples_dir
    from .predict import Predictor

    samples = not inputs
    if samples:
        inputs = (bundled_samples_dir() / "images",)
    try:
        predictor = Predictor.from_file(model, device, tile_size=tile_size, compile=compile_model)
    except (NucleisegError, ValueError) as exc:
        _fail(str(exc))
    ws = predictor.watershed
    ws.marker_threshold = ws.marker_threshold if marker_threshold is None else marker_threshold
    ws.mask_threshold = ws.mask_threshold if mask_threshold is None else mask_threshold
    ws.min_area = ws.min_area if min_area is None else min_area
    t0 = time.perf_counter()
    try:
        if workers or scheduler:
            from .batch import PredictOptions
            from .cluster import connect, predict_on_cluster

            opts = PredictOptions(not no_overlay, tta, skip_existing, measure, pixel_size, label_format, channel,
                                  block_size)
            with connect(workers, scheduler) as client:
                where = scheduler or f"{workers} local workers"
                results = predict_on_cluster(
                    client, list(inputs), out, str(model) if model else None, ws.to_dict(), opts, rle, device,
                    {"tile_size": tile_size, "compile": compile_model},
                    progress=lambda it: _bar(it, desc=f"predict (Dask, {where})", unit="image"))
        else:
            results = predict_files(list(inputs), out, predictor, rle, overlay=not no_overlay, tta=tta,
                                    skip_existing=skip_existing, measure=measure, pixel_size=pixel_size,
                                    label_format=label_format, channel=channel, block_size=block_size,
                                    progress=lambda it: _bar(it, desc=f"predict ({predictor.device.type})",
                                                             unit="image"))
    except NucleisegError as exc:
        _fail(str(exc))
    done = [r for r in results if r.status == "done"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    for r in (done if samples or len(results) <= 20 else []):
        click.echo(f"{r.image_id}: {r.n_nuclei} nuclei ({r.seconds * 1000:.0f} ms)")
    for r in failed:
        click.echo(f"{r.image_id}: FAILED {r.error}")
    total = time.perf_counter() - t0
    click.echo(f"{len(done)} images labeled ({sum(r.n_nuclei for r in done)} nuclei) in {total:.1f} s "
               f"on {predictor.device.type}, {len(skipped)} skipped (already done), {len(failed)} failed; "
               f"results in {out}/")
    if samples:
        report = score_sources(LabelSource(bundled_samples_dir() / "labels"), LabelSource(out))
        for p in report.per_image:
            click.echo(f"  DSB score {p['score']:.3f}  {p['image_id']} ({p['n_true']} true, {p['n_pred']} predicted)")
        click.echo(f"DSB score on the {report.n_images} bundled samples: {report.score:.4f}")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (the same weights, the tuned watershed values).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def tune(data: Path, model: Path | None, out: Path, device: str) -> None:
    """Re-tune a model's watershed thresholds and minimum size on DATA's validation split.

    \b
    DATA as for 'train' (the same split is held out). The grid: marker threshold 0.3..0.9,
    mask threshold 0.2..0.7, minimum size = a quantile (0 to 10%) of the training nuclei's areas.
    Example:
      nucleiseg tune data/dsb2018 -o tuned.pt
    """
    from .checkpoint import save_model
    from .predict import Predictor
    from .train import load_samples, split_samples, tune_for

    try:
        predictor = Predictor.from_file(model, device)
        norm = predictor.config.get("normalization", {})
        samples = load_samples(data, int(predictor.config.get("border_width", 2)), float(norm.get("p_low", 1.0)),
                               float(norm.get("p_high", 99.8)), progress=lambda it: _bar(it, desc="load", unit="image"))
        train_set, val_set = split_samples(samples)
        update = tune_for(predictor, train_set, val_set)
        save_model(out, predictor.model, {**predictor.config, **update})
    except NucleisegError as exc:
        _fail(str(exc))
    v = update["validation"]
    click.echo(f"wrote {out}: watershed {update['watershed']}; validation DSB {v['score']:.4f} "
               f"(was {v['score_default_watershed']:.4f}) " + " ".join(f"{m} {x:.3f}" for m, x in v["per_modality"].items()))


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
      nucleiseg score ../shared/dsb2018/stage1_train out --json
    """
    from .batch import format_table, score_sources
    from .data.sources import LabelSource

    try:
        report = score_sources(LabelSource(true), LabelSource(pred),
                               progress=lambda it: _bar(it, desc="score", unit="image"))
    except NucleisegError as exc:
        _fail(str(exc))
    if plot is not None and report.per_threshold:
        from .figures import score_plot

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
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--truth", "-t", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ground-truth label image: adds a TP / FP / FN panel at IoU 0.5 and the DSB score.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Figure file [default: IMAGE_show.png].")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model when LABELS is not given.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def show(image: Path, labels: Path | None, truth: Path | None, out: Path | None, model: Path | None,
         device: str) -> None:
    """Save a side-by-side figure: IMAGE, its labels (LABELS, or predicted), and the matching
    against --truth.

    \b
    Example:
      nucleiseg show cells.png out/cells.tif --truth truth/cells.tif -o cells_show.png
    """
    from .data.images import read_image, read_label_image
    from .figures import show_figure
    from .predict import Predictor

    try:
        img = read_image(image)
        lab = read_label_image(labels) if labels else Predictor.from_file(model, device).predict(img)
        true = read_label_image(truth) if truth else None
    except NucleisegError as exc:
        _fail(str(exc))
    for name, arr in (("labels", lab), ("truth", true)):
        if arr is not None and arr.shape != img.shape[:2]:
            _fail(f"{name} {arr.shape} and image {img.shape[:2]} differ in shape")
    out = out or image.with_name(image.stem + "_show.png")
    show_figure(out, img, lab, true, image.name)
    click.echo(f"wrote {out}")


DEFAULT_DSB = "../shared/dsb2018/stage1_train"


@main.group()
def bench() -> None:
    """Benchmarks on real DSB2018 data, timed against references in the same run."""


@bench.command("weightmap")
@click.argument("dsb_dir", default=DEFAULT_DSB, type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, help="Only the first N images (the 375-nucleus image is always included).")
@click.option("--no-reference", is_flag=True, help="Skip the O(K H W) reference (about 450 s for all 664 images).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure peak extra memory on the 375-nucleus image (fresh processes).")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON.")
def bench_weightmap_cmd(dsb_dir: Path, limit: int | None, no_reference: bool, memory: bool, as_json: Path | None) -> None:
    """U-Net weight maps: ours vs the per-nucleus reference vs one SciPy EDT, per image and in total.

    \b
    Example:
      nucleiseg bench weightmap ../shared/dsb2018/stage1_train
    """
    from .benchmark import BIG_IMAGE, bench_weightmap, format_weightmap, peak_extra_memory_mb, to_json
    from .data.sources import LabelSource

    source = LabelSource(dsb_dir)
    ids = source.ids()
    if limit is not None:
        ids = ids[:limit] + ([BIG_IMAGE] if BIG_IMAGE in ids[limit:] else [])
    result = bench_weightmap(dsb_dir, ids, reference=not no_reference,
                             progress=lambda it: _bar(it, desc="weight maps", unit="image"))
    click.echo(format_weightmap(result))
    if memory and BIG_IMAGE in ids:
        labels = source.get(BIG_IMAGE)
        result["peak_extra_mb"] = {m: peak_extra_memory_mb(labels, m) for m in ("ours", "edt", "reference")}
        click.echo("peak extra memory on the 375-nucleus image: "
                   + ", ".join(f"{m} {v:.0f} MB" for m, v in result["peak_extra_mb"].items()))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("score")
@click.argument("dsb_dir", default=DEFAULT_DSB, type=click.Path(exists=True, path_type=Path))
@click.option("--huge/--no-huge", default=True, show_default=True, help="Also score a 16384 x 16384 mosaic (ours only).")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path),
              help="Predict the 603 x 1272 image with this model [default: bundled] for the first case.")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON.")
def bench_score_cmd(dsb_dir: Path, huge: bool, model: Path | None, as_json: Path | None) -> None:
    """The DSB score: ours vs StarDist's matching vs the Kaggle-kernel formulation.

    \b
    StarDist is a benchmark-only extra: pip install --no-deps stardist csbdeep six
    StarDist counts a match at IoU >= t, the DSB2018 rule (and ours) at IoU > t; counts differ
    only for pairs whose IoU equals a threshold exactly.
    Example:
      nucleiseg bench score ../shared/dsb2018/stage1_train
    """
    from .benchmark import BIG_IMAGE, bench_score, format_score, to_json
    from .data.dsb2018 import image_path
    from .data.images import read_image
    from .predict import Predictor

    try:
        prediction = Predictor.from_file(model, "cpu").predict(read_image(image_path(dsb_dir, BIG_IMAGE)))
    except NucleisegError as exc:
        _fail(str(exc))
    result = bench_score(dsb_dir, prediction, huge=huge)
    click.echo(format_score(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("predict")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-tta", is_flag=True, help="Skip the TTA rows.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="Channels-last tensors.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the network (compilation not timed).")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON.")
def bench_predict_cmd(model: Path | None, device: str, no_tta: bool, channels_last: bool, compile_model: bool,
                      as_json: Path | None) -> None:
    """Inference speed on bundled samples of 256x256, 520x696 and 1024x1024 pixels.

    \b
    Example:
      nucleiseg bench predict
    """
    from .benchmark import bench_predict, format_predict, to_json
    from .data.images import read_image
    from .data.sources import bundled_samples_dir
    from .predict import Predictor

    try:
        predictor = Predictor.from_file(model, device, channels_last=channels_last, compile=compile_model)
    except NucleisegError as exc:
        _fail(str(exc))
    images = {}
    for prefix in ("1c681dfa5cf7", "4596961c789d", "76a372bfd3fa"):  # 256x256, 520x696, 1024x1024
        path = next((bundled_samples_dir() / "images").glob(f"{prefix}*.png"))
        images[prefix] = read_image(path)
    result = bench_predict(predictor, images, tta=(False,) if no_tta else (False, True))
    click.echo(format_predict(result))
    if as_json:
        as_json.write_text(to_json(result))


@bench.command("scale")
@click.argument("dsb_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", "n_images", default=64, show_default=True, help="Images for the throughput rows.")
@click.option("--workers", default="1,2", show_default=True, help="Local Dask cluster sizes to time.")
@click.option("--mosaic", "mosaic_side", default=2048, show_default=True, help="Side of the mosaic predicted both ways.")
@click.option("--block-size", default=448, show_default=True,
              help="Block size for the mosaic (448: block borders fall inside the 256 px tiles, not on their seams).")
@click.option("--big", "big_side", default=0, show_default=True,
              help="Also predict a mosaic of this side block-wise (default blocks) and report its peak memory.")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON.")
def bench_scale_cmd(dsb_dir: Path | None, n_images: int, workers: str, mosaic_side: int, block_size: int, big_side: int,
                    as_json: Path | None) -> None:
    """Scale-out: images per second on 1, 2 Dask workers; block-wise vs whole-image prediction.

    \b
    DSB_DIR: stage1_train (its first --images images, and its 256 x 256 fluorescence images
    for the mosaic); without it, the bundled samples.
    Example:
      nucleiseg bench scale ../shared/dsb2018/stage1_train --big 8192
    """
    from .benchmark import bench_scale, format_scale, to_json
    from .data.sources import bundled_samples_dir, iter_image_paths

    if dsb_dir is not None:
        images = [p for _, p in iter_image_paths([dsb_dir])][:n_images]
    else:
        samples = sorted((bundled_samples_dir() / "images").glob("*.png"))
        images = (samples * (-(-n_images // len(samples))))[:n_images]
        if len(set(images)) < len(images):
            _fail("without DSB_DIR only the 8 bundled samples exist; use --images 8 or give DSB_DIR")
    result = bench_scale(images, tuple(int(w) for w in workers.split(",")), mosaic_side, block_size, big_side, dsb_dir)
    click.echo(format_scale(result))
    if as_json:
        as_json.write_text(to_json(result))


if __name__ == "__main__":
    main()
