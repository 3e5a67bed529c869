"""What a model file stores beside the weights, as validated dataclasses (plain data on disk).

:class:`ModelConfig` is everything needed to rebuild the network and reproduce its predictions
(architecture, input normalisation, the border width of its targets, the watershed values tuned
for it), plus a record of how it was made (training options, validation scores, the loss /
score history). Modelled on StarDist's ``Config2D`` (``stardist/models/model2d.py``): one
dataclass, checked when built, written and read as a dict of plain values.

On disk (``to_dict``)::

    {"unet": {...}, "normalization": {...}, "watershed": {...}, "border_width": int,
     "training": {...}, "validation": {...}, "history": [...], "training_minutes": float,
     "min_area_quantiles": {...}}

The last five are records: present once a training run or a tuning wrote them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from ..postprocess import WatershedParams
from ..targets.border import DEFAULT_BORDER_WIDTH
from ..transforms import INPUT_CHANNELS, InputChannels

#: The kinds of U-Net block (:func:`nucleiseg.model.unet_core.conv_block`, whose ``BLOCKS`` lists
#: the same names: that file imports nothing but PyTorch, and this one not PyTorch).
Block = Literal["conv", "residual", "conv+scse", "residual+scse"]

#: What the normalisation does (see :mod:`nucleiseg.transforms`), as stored in model files.
NORMALIZATION_METHOD = "gray, percentile stretch, invert light background"


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`~nucleiseg.model.unet.UNet`.

    Attributes
    ----------
    in_channels : int
        Input channels (1: the normalised gray image).
    out_channels : int
        Output channels (3: mask - border, border, background).
    features : tuple of int
        Feature widths per level; depth (number of poolings) is ``len(features) - 1``.
    block : str
        Every level's block: "conv" (two 3x3 conv + BatchNorm + ReLU, the U-Net paper's),
        "residual" (He et al. 2016), either followed by scSE ("conv+scse", "residual+scse"; Roy
        et al. 2018). See :mod:`nucleiseg.model.unet_core`.
    """

    in_channels: int = 1
    out_channels: int = 3
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    block: Block = "conv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if len(self.features) < 2 or min(self.features) < 1:
            raise ValueError(f"a U-Net needs at least two positive feature widths, got {self.features}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.in_channels} in, {self.out_channels} out")
        if self.block not in get_args(Block):
            raise ValueError(f"block must be one of {', '.join(get_args(Block))}, got {self.block!r}")

    @property
    def depth(self) -> int:
        """Number of 2x2 poolings; inputs are padded to a multiple of ``2**depth``."""
        return len(self.features) - 1

    def to_dict(self) -> dict:
        """Plain data; ``block`` is left out when "conv" (files written before it existed)."""
        d = {"in_channels": self.in_channels, "out_channels": self.out_channels, "features": list(self.features)}
        return d | ({"block": self.block} if self.block != "conv" else {})

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        optional = {"block": str(d["block"])} if "block" in d else {}
        return cls(int(d["in_channels"]), int(d["out_channels"]), tuple(int(f) for f in d["features"]), **optional)


@dataclass(frozen=True)
class NormalizationConfig:
    """The input normalisation (:func:`nucleiseg.transforms.normalize_image`).

    Attributes
    ----------
    p_low, p_high : float
        Percentiles (0..100) of the gray image mapped to 0 and 1.
    method : str
        What is done, in words (stored for readers of the file).
    channels : str
        What the network is given, one of :data:`nucleiseg.transforms.INPUT_CHANNELS` ("gray",
        "gray+haematoxylin", "rgb"; see :func:`nucleiseg.transforms.network_input`).
    """

    p_low: float = 1.0
    p_high: float = 99.8
    method: str = NORMALIZATION_METHOD
    channels: InputChannels = "gray"

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise ValueError(f"need 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}")
        if self.channels not in INPUT_CHANNELS:
            raise ValueError(f"channels must be one of {', '.join(INPUT_CHANNELS)}, got {self.channels!r}")

    def to_dict(self) -> dict:
        """Plain data; ``channels`` is left out when "gray" (files written before it existed)."""
        return {k: v for k, v in asdict(self).items() if k != "channels" or v != "gray"}

    @classmethod
    def from_dict(cls, d: dict) -> "NormalizationConfig":
        return cls(**{k: str(v) if k in ("method", "channels") else float(v) for k, v in d.items()})


@dataclass(frozen=True)
class ValidationRecord:
    """The model's score on its validation images.

    Attributes
    ----------
    score : float
        Mean DSB2018 score over the validation images, with the stored watershed values.
    per_modality : dict of str to float
        The same mean per image modality (fluorescence, brightfield, histology).
    step : int or None
        Training step of the checkpoint.
    score_default_watershed : float or None
        The score with the watershed values before tuning (set by tuning).
    ids : list of str
        The validation ImageIds (set at the end of training).
    per_collection : dict of str to float
        The mean score per training collection, when there were several.
    """

    score: float
    per_modality: dict[str, float]
    step: int | None = None
    score_default_watershed: float | None = None
    ids: list[str] = field(default_factory=list)
    per_collection: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], {})}

    @classmethod
    def from_dict(cls, d: dict) -> "ValidationRecord":
        def scores(m: dict) -> dict[str, float]:
            return {str(k): float(v) for k, v in m.items()}

        parse = {"score": float, "per_modality": scores, "step": int, "score_default_watershed": float,
                 "ids": lambda ids: [str(i) for i in ids], "per_collection": scores}
        return cls(**{k: parse[k](v) for k, v in d.items() if v is not None})


@dataclass(frozen=True)
class ModelConfig:
    """What a model file holds besides the weights (see the module docstring).

    Attributes
    ----------
    unet : UNetConfig
        The architecture.
    normalization : NormalizationConfig
        The input normalisation the network was trained with.
    watershed : WatershedParams
        Post-processing values ``predict`` uses by default (tuned on the validation split).
    border_width : int
        Contact-border radius of the training targets, pixels.
    training : dict
        Record of the training run: its options (:class:`~nucleiseg.training.config.TrainConfig`
        fields), data, image counts, device, processes and steps done. Not read back.
    validation : ValidationRecord or None
        Validation scores of the stored weights.
    history : list of dict
        Per validation: step, minutes, smoothed loss, validation score (overall, per modality).
    training_minutes : float or None
        Wall-clock training time.
    min_area_quantiles : dict of str to int
        Minimum-size candidates of the tuning: quantile of the training nuclei's areas -> pixels.
    nucleus_diameter : float or None
        Median equivalent diameter of the training nuclei, pixels: the size ``--diameter``
        rescales images' nuclei to (None: not recorded, no rescaling).
    trained_on : list of dict
        One record per training collection: its provenance (name, licence, source, citation;
        :class:`~nucleiseg.data.provenance.Provenance`), the folder, its training and validation
        image counts and its sampling weight. A model trained on a collection is bound by its
        licence.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    watershed: WatershedParams = field(default_factory=WatershedParams)
    border_width: int = DEFAULT_BORDER_WIDTH
    training: dict[str, Any] = field(default_factory=dict)
    validation: ValidationRecord | None = None
    history: list[dict] = field(default_factory=list)
    training_minutes: float | None = None
    min_area_quantiles: dict[str, int] = field(default_factory=dict)
    trained_on: list[dict] = field(default_factory=list)
    nucleus_diameter: float | None = None

    def __post_init__(self) -> None:
        if self.border_width < 1:
            raise ValueError(f"border_width must be >= 1 pixel, got {self.border_width}")

    def licences(self) -> list[str]:
        """"name: licence" of every collection the model was trained on (empty when not recorded)."""
        return [f"{r['name']}: {r['licence']}" for r in self.trained_on]

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` (this one is frozen)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain data for the model file; records not yet written are left out."""
        d = {"unet": self.unet.to_dict(), "normalization": self.normalization.to_dict(),
             "watershed": self.watershed.to_dict(), "border_width": self.border_width}
        optional = {"training": self.training, "history": self.history, "training_minutes": self.training_minutes,
                    "min_area_quantiles": self.min_area_quantiles, "trained_on": self.trained_on,
                    "nucleus_diameter": self.nucleus_diameter,
                    "validation": self.validation.to_dict() if self.validation else None}
        return d | {k: v for k, v in optional.items() if v not in (None, {}, [])}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Read :meth:`to_dict`'s output back, checking every value; entries left out take the
        field defaults, except ``unet``, which is required.

        Raises
        ------
        KeyError, TypeError, ValueError
            on a missing ``unet``, an unknown entry, or a value of the wrong type or range.
        """
        parse = {"unet": UNetConfig.from_dict, "normalization": NormalizationConfig.from_dict,
                 "watershed": WatershedParams.from_dict, "border_width": int, "training": dict,
                 "validation": ValidationRecord.from_dict, "history": lambda h: [dict(x) for x in h],
                 "training_minutes": float, "min_area_quantiles": lambda q: {str(k): int(v) for k, v in q.items()},
                 "trained_on": lambda records: [dict(r) for r in records], "nucleus_diameter": float}
        unknown = set(d) - set(parse)
        if unknown:
            raise ValueError(f"unknown config entries {sorted(unknown)}")
        if "unet" not in d:
            raise KeyError("unet")
        return cls(**{k: parse[k](v) for k, v in d.items() if v is not None})
