"""Training options: :class:`TrainConfig`, the one source of every default and choice.

``nucleiseg train`` builds its options from this dataclass (names, types, defaults, choices and
help text from the Attributes section below), and a model file records it under ``training``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace
from typing import Literal

from ..errors import NucleisegError
from ..hardware import Precision
from ..model.config import Block
from ..targets.border import DEFAULT_BORDER_WIDTH
from ..transforms import InputChannels
from .augment import AugmentLevel

Sampling = Literal["balanced", "uniform"]
Schedule = Literal["cosine", "constant"]

#: Budget of a run given none (no epochs, steps or minutes).
DEFAULT_EPOCHS = 50


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run (plain data, stored in the model file's ``training`` record).

    Attributes
    ----------
    features : tuple of int
        U-Net feature widths per level; depth = number of widths - 1.
    block : str
        U-Net block at every level: conv (the U-Net paper's two 3x3 convolutions), residual (He
        et al. 2016), conv+scse or residual+scse (followed by squeeze & excitation, Roy et al.
        2018). See nucleiseg.model.unet_core.
    crop_size : int
        Side of the random training crops, pixels.
    batch_size : int
        Crops per optimiser step (per process under torchrun).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay.
    border_weight : float
        Cross-entropy weight of the border class (mask - border and background weigh 1).
    dice_weight : float
        Weight of the soft Dice term over (mask - border, border); 0 = cross-entropy only.
    border_width : int
        Contact-border radius of the targets, pixels.
    epochs : float or None
        Stop after this many epochs (an epoch = training images / batch size steps).
    steps : int or None
        Stop after this many optimiser steps.
    minutes : float or None
        Stop after this many minutes of training, validation included (wall clock). The run
        stops at whichever budget it reaches first; with none given, 50 epochs.
    weight_map : bool
        Weight the cross-entropy per pixel by the U-Net weight map (Ronneberger et al. 2015,
        eq. 2) instead of per class.
    w0 : float
        Weight-map border weight (eq. 2; with weight_map).
    sigma : float
        Weight-map border width, pixels (eq. 2; with weight_map).
    val_every : int
        Validate, and keep the checkpoint if it is the best so far, every this many steps.
    seed : int
        Seed of the initial weights and of the crop sampling.
    p_low : float
        Normalisation: percentile (0..100) of the gray image mapped to 0.
    p_high : float
        Normalisation: percentile (0..100) of the gray image mapped to 1.
    sampling : {"balanced", "uniform"}
        Image sampling: balanced draws an image with probability proportional to
        sqrt(pixels) / sqrt(images of its modality); uniform draws every image alike.
    augment : {"none", "flips", "full", "heavy"}
        Augmentation level (heavy = full + elastic + blur; see nucleiseg.training.augment).
    schedule : {"cosine", "constant"}
        Learning rate after the warm-up (3 % of the budget).
    ema : float
        Decay of an exponential moving average of the weights (e.g. 0.999; 0 = off). The
        average is what is validated and saved.
    tune : bool
        Tune the watershed values on the validation split at the end.
    sync_bn : bool
        SyncBatchNorm across processes (under torchrun).
    input_channels : {"gray", "gray+haematoxylin", "rgb"}
        What the network is given (see nucleiseg.transforms.network_input): the gray image, plus
        the haematoxylin channel of colour images, or RGB.
    collection_weights : tuple of float
        With several DATA collections: how often each is drawn, relative to the others, in the
        order given (none given: all alike, whatever their sizes).
    nucleus_dimming : float
        Half of the crops have each nucleus dimmed towards the background by its own factor in
        [1 - this, 1] (0 = off; see nucleiseg.training.augment.dim_nuclei): dim nuclei beside
        bright ones.
    diameter : float or None
        Canonical nucleus diameter, pixels: every training and validation image is first resized
        so the median equivalent diameter of its nuclei is this (Cellpose's design, Stringer et
        al., Nature Methods 18, 2021), and the model records it as its training diameter, which
        predict's default --diameter auto rescales images to. None: images at their own scale.
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the forward and backward passes: bf16 autocast (weights, optimiser and loss
        stay float32) or float32. auto: bf16 on CUDA and on CPUs with native bf16 (AMX,
        AVX512-BF16, Arm BF16), float32 on other CPUs (see nucleiseg.hardware).
    """

    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    block: Block = "conv"
    crop_size: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    border_weight: float = 3.0
    dice_weight: float = 1.0
    border_width: int = DEFAULT_BORDER_WIDTH
    epochs: float | None = None
    steps: int | None = None
    minutes: float | None = None
    weight_map: bool = False
    w0: float = 10.0
    sigma: float = 5.0
    val_every: int = 500
    seed: int = 0
    p_low: float = 1.0
    p_high: float = 99.8
    sampling: Sampling = "balanced"
    augment: AugmentLevel = "full"
    schedule: Schedule = "cosine"
    ema: float = 0.0
    tune: bool = True
    sync_bn: bool = False
    input_channels: InputChannels = "gray"
    collection_weights: tuple[float, ...] = ()
    nucleus_dimming: float = 0.0
    diameter: float | None = None
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "collection_weights", tuple(float(w) for w in self.collection_weights))
        if any(not w > 0 for w in self.collection_weights):
            raise NucleisegError(f"collection weights must be > 0, got {self.collection_weights}")
        for name, allowed in choices().items():
            if getattr(self, name) not in allowed:
                raise NucleisegError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema < 1.0:
            raise NucleisegError(f"ema must be in [0, 1), got {self.ema}")
        for name in ("crop_size", "batch_size", "val_every", "border_width"):
            if getattr(self, name) < 1:
                raise NucleisegError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.features) < 2 or min(self.features) < 1:
            raise NucleisegError(f"features must be two or more positive widths, got {self.features}")
        if not 0.0 <= self.nucleus_dimming < 1.0:
            raise NucleisegError(f"nucleus_dimming must be in [0, 1), got {self.nucleus_dimming}")
        if self.diameter is not None and not self.diameter > 0:
            raise NucleisegError(f"diameter must be > 0 pixels, got {self.diameter}")
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise NucleisegError(f"need 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}")

    def with_budget(self) -> "TrainConfig":
        """This config with :data:`DEFAULT_EPOCHS` when it gives no budget (a copy; this one is
        frozen and never changed)."""
        if self.epochs is None and self.steps is None and self.minutes is None:
            return replace(self, epochs=DEFAULT_EPOCHS)
        return self


def choices() -> dict[str, tuple[str, ...]]:
    """{field: allowed values} for every field typed as a ``Literal``."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: typing.get_args(hints[f.name]) for f in fields(TrainConfig)
            if typing.get_origin(hints[f.name]) is Literal}

