"""``nucleiseg train`` and ``nucleiseg tune``."""

from __future__ import annotations

from pathlib import Path

import click

from ..training.config import TrainConfig
from ._common import build_dataclass, dataclass_options, device_option, main, progress_bar


_DATA = click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))


@main.command()
@_DATA
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Model file to write.")
@dataclass_options(TrainConfig)
@device_option
@click.option("--resume", is_flag=True, help="Continue from <out>.resume.pt if it exists.")
def train(data: tuple[Path, ...], out: Path, device: str, resume: bool, **options) -> None:
    """Train the U-Net on the collections DATA (each a 'nucleiseg convert' folder, or labeled
    images as DSB2018, images/ + masks/, Cellpose, Aperio XML or QuPath GeoJSON).

    \b
    Each collection's validation images are held out (the fixed DSB2018 and MoNuSeg 2018 subsets,
    else 15% by a stratified rule) and scored with the DSB metric as training goes; the best
    checkpoint goes to --out, a resumable state to <out>.resume.pt. The model file records each
    collection's provenance and licence. Default budget when none is given: 50 epochs. Under
    torchrun, trains with DistributedDataParallel (NCCL on GPUs, gloo on CPU); --batch-size is
    per process.
    Examples:
      nucleiseg train data/dsb2018 --out model.pt --minutes 90
      nucleiseg train data/dsb2018 monuseg2018/train --collection-weights 3,1 --out model.pt
      torchrun --standalone --nproc_per_node 4 -m nucleiseg train data/dsb2018 --out model.pt
    """
    from ..inference.predictor import choose_device
    from ..training.loop import train as run_training

    cfg = build_dataclass(TrainConfig, options)
    dev = choose_device(device)
    result = run_training(list(data), out, cfg, dev, resume=resume,
                          progress=progress_bar("step", f"train ({dev.type})", mininterval=5))
    if result is not None:  # rank 0 (or a single process) reports
        v = result.validation
        click.echo(f"wrote {out}: validation DSB {v.score:.4f} on {len(v.ids)} images")


@main.command()
@_DATA
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), help="Model file [default: bundled].")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (the same weights, the tuned watershed values).")
@device_option
def tune(data: tuple[Path, ...], model: Path | None, out: Path, device: str) -> None:
    """Re-tune a model's watershed thresholds and minimum size on DATA's validation split.

    \b
    DATA as for 'train' (the same split is held out). The grid: marker threshold 0.3..0.9,
    mask threshold 0.2..0.7, minimum size = a quantile (0 to 10%) of the training nuclei's areas.
    Example:
      nucleiseg tune data/dsb2018 -o tuned.pt
    """
    from ..inference.predictor import Predictor
    from ..model.file import save_model_file
    from ..training.samples import load_collections
    from ..training.validation import tune_model

    predictor = Predictor.from_file(model, device)
    norm = predictor.config.normalization
    train_set, val_set, _ = load_collections(list(data), predictor.config.border_width, norm.p_low, norm.p_high,
                                             progress=progress_bar(), channels=norm.channels)
    tuned = tune_model(predictor, train_set, val_set)
    save_model_file(out, predictor.model, tuned)
    v = tuned.validation
    click.echo(f"wrote {out}: watershed {tuned.watershed.to_dict()}; validation DSB {v.score:.4f} "
               f"(was {v.score_default_watershed:.4f}) " + " ".join(f"{m} {x:.3f}" for m, x in v.per_modality.items()))
