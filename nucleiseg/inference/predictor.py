"""Inference: image -> normalised input -> U-Net -> softmax probabilities -> watershed labels.

Images larger than ``tile_size`` are predicted by overlap-tile (:mod:`~nucleiseg.inference.tiling`):
tiles run in batches and are blended, so memory is bounded by the tile batch and seams do not
show. Images with a side over twice ``PredictOptions.block_size`` go block by block
(:mod:`~nucleiseg.inference.blockwise`). Test-time augmentation (``tta=True``) averages the 8
dihedral transforms, each prediction transformed back first.

Scale (``PredictOptions.diameter``, Cellpose's design: Stringer et al., "Cellpose: a generalist
algorithm for cellular segmentation", Nature Methods 18, 2021): an image whose nuclei are D pixels
across is resized by ``scale = model diameter / D`` (the median equivalent diameter of the
training nuclei, stored in the model file), predicted, and its probabilities resized back, so
the watershed runs at the original size (minimum area divided by scale squared). D is
``"auto"`` by default: the median equivalent diameter of a first pass's nuclei at the original
scale, refined by a second pass at the scale the first suggests (fragments of large nuclei join
there); no rescaling with fewer than :data:`MIN_NUCLEI_FOR_SIZE` nuclei, or when the factor is
within 10 % of 1. For an image that fits in one tile the estimate's passes are the prediction:
the second pass's factor is kept when the refined estimate is within :data:`REUSE_TOLERANCE` of
it, and its probabilities reused, so "auto" costs one network pass more than none at most. D may
also be given in pixels, or None for no rescaling. Why "auto" is the default:
benchmarks/README.md, "Scale handled by default (issue 23)".

Speed options: the network runs under ``torch.inference_mode``, in bf16 autocast on CUDA and on
CPUs with native bf16 (``precision="auto"``, the default, :func:`nucleiseg.hardware.autocast_dtype`),
except the diameter estimate's passes, which always run in float32: a probability near a
threshold can tip the estimate, and with it the whole image's scale (why: benchmarks/README.md,
"bf16 inference on the CPU"); with
channels-last tensors (``channels_last=True``, the default: faster convolutions on CPU oneDNN and
CUDA cuDNN); for a model read from a file, with each BatchNorm folded into the convolution before
it (:func:`~nucleiseg.model.unet.fold_batchnorm`: the same function, one pass over the
activations fewer); and optionally compiled with ``torch.compile`` (``compile=True``: the first
call per input shape pays the compilation, so it only pays off for many images of one size).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
import torch

from ..hardware import Precision, autocast_dtype
from ..io import LABEL_FORMATS, OutputPaths, output_paths
from ..labels import median_diameter
from ..errors import ModelFileError
from ..model.config import ModelConfig
from ..model.file import read_model_file
from ..model.unet import fold_batchnorm as folded_batchnorm
from ..postprocess import WatershedParams, probabilities_to_labels
from ..transforms import dihedral, dihedral_inverse, network_input, pad_to_multiple, resize
from . import BACKENDS, DEFAULT_DIAMETER, DEFAULT_PRECISION
from .blockwise import DEFAULT_BLOCK_SIZE, DEFAULT_HALO, is_huge, predict_blockwise
from .tiling import DEFAULT_OVERLAP, blend_window, default_tile_batch, default_tile_size, tile_layout


#: Rescaling by an estimated diameter needs at least this many nuclei in the first pass.
MIN_NUCLEI_FOR_SIZE = 5
#: The diameter estimate reads the central SIZE_REGION x SIZE_REGION pixels of an image (of a
#: slide: around the middle of its tissue) in tiles of at most SIZE_REGION, whatever the device's
#: tile size: where the seams fall moves a probability near a threshold, and with it the estimate
#: and every pixel's scale (a 1024 px bundled sample: diameter 15.7 px untiled, 14.7 in 544 px
#: tiles), so the scale chosen does not depend on the device.
SIZE_REGION = 1024
#: Factors the scale is clipped to.
SCALE_RANGE = (0.25, 4.0)
#: --diameter auto keeps the second pass's factor when the refined estimate's is within this
#: fraction of it (so that pass is not run again: 520 x 696 asks 0.687 after 0.693, say).
REUSE_TOLERANCE = 0.05


@dataclass(frozen=True)
class PredictOptions:
    """How to predict an image and, for folder jobs, what to write for it.

    Attributes
    ----------
    watershed : WatershedParams or None
        Post-processing values; None uses the model's tuned values.
    tta : bool
        Average the 8 flips / 90-degree rotations (8x the network time).
    channel : int or None
        Page of a multi-page TIFF or channel of a colour image to predict on (file jobs).
    block_size : int
        Images with a side over twice this (pixels) are predicted block by block.
    overlay : bool
        Write ``<ImageId>_overlay.png`` (file jobs).
    skip_existing : bool
        Leave images whose outputs are already in the output folder (file jobs).
    measure : bool
        Write ``<ImageId>_nuclei.csv`` and ``summary.csv`` (file jobs).
    pixel_size : float or None
        Micrometres per pixel, for areas in square micrometres (with ``measure``).
    label_format : str
        ``"tif"`` (uint16 / uint32 TIFF) or ``"png"`` (16-bit PNG).
    diameter : float, "auto" or None
        Typical nucleus diameter of the image, pixels, to rescale it by (see the module
        docstring); "auto" (the default) estimates it; None predicts at the original scale.
    geojson : bool
        Write ``<ImageId>.geojson``, the nuclei as QuPath polygons with their measurements
        (:mod:`nucleiseg.geojson`; file jobs).
    level : int
        Slides only: the pyramid level to predict (0 = full resolution); results in level-0 pixels.
    region : (x, y, width, height) or None
        Slides only: predict this rectangle (level-0 pixels) rather than the whole slide.
    geojson_gz : bool
        With ``geojson``: write it gzip-compressed, ``<ImageId>.geojson.gz`` (a slide's GeoJSON
        is several hundred MB a gigapixel).
    watershed_processes : int or None
        Slides and images predicted block by block into a file: worker processes that run each
        block's watershed (and a slide's measurements and outlines) while the network predicts
        the next blocks (0: all in one process); None: the default of
        :func:`~nucleiseg.inference.blockwise.postprocess_processes` (none on a CPU, one per
        spare core on CUDA).
    """

    watershed: WatershedParams | None = None
    tta: bool = False
    channel: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    overlay: bool = True
    skip_existing: bool = False
    measure: bool = False
    pixel_size: float | None = None
    label_format: str = "tif"
    diameter: float | Literal["auto"] | None = DEFAULT_DIAMETER
    geojson: bool = False
    level: int = 0
    region: tuple[int, int, int, int] | None = None
    geojson_gz: bool = False
    watershed_processes: int | None = None

    def paths(self, out: str | os.PathLike, image_id: str) -> OutputPaths:
        """The files ``image_id`` has in folder ``out`` under these options (:func:`~nucleiseg.io.output_paths`)."""
        return output_paths(out, image_id, self.label_format, self.geojson_gz)

    def __post_init__(self) -> None:
        if self.level < 0:
            raise ValueError(f"level must be >= 0, got {self.level}")
        if self.region is not None and (len(self.region) != 4 or min(self.region[:2]) < 0 or min(self.region[2:]) <= 0):
            raise ValueError(f"region must be x, y >= 0 and width, height > 0 (level-0 pixels), got {self.region}")
        if self.diameter is not None and self.diameter != "auto" and not float(self.diameter) > 0:
            raise ValueError(f"diameter must be > 0 pixels or 'auto', got {self.diameter!r}")
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(f"label format must be one of {', '.join(LABEL_FORMATS)}, got {self.label_format!r}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ValueError(f"pixel size must be > 0 micrometres, got {self.pixel_size}")
        if self.watershed_processes is not None and self.watershed_processes < 0:
            raise ValueError(f"watershed processes must be >= 0, got {self.watershed_processes}")
        if self.block_size <= 2 * DEFAULT_HALO:
            raise ValueError(f"block size must exceed {2 * DEFAULT_HALO} pixels, got {self.block_size}")


class Segmentation(NamedTuple):
    """Labels of one image and the scale they were predicted at: ``diameter`` the nuclei's
    diameter used (pixels; given, estimated, or None), ``scale`` the resize factor (1: none)."""

    labels: np.ndarray
    diameter: float | None
    scale: float


def choose_device(name: str | torch.device = "auto") -> torch.device:
    """The one place a torch device is chosen: 'auto' -> CUDA when available, else CPU;
    'cpu' / 'cuda' (or a ``torch.device``) as asked."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_tiles(tile_size: int, overlap: int) -> None:
    """Raise ValueError unless ``tile_size`` is a multiple of 16 and more than twice ``overlap``."""
    if tile_size % 16 or tile_size <= 2 * overlap:
        raise ValueError(f"tile_size must be a multiple of 16 and > 2 * overlap, got {tile_size}, {overlap}")


class Predictor:
    """A loaded model with its normalisation and watershed values.

    Build one with :meth:`from_file` (None = the bundled model) or :func:`load_model`.

    Parameters
    ----------
    model : the network (any module mapping (N, 1, H, W) to (N, 3, H, W) logits).
    config : the model's :class:`~nucleiseg.model.config.ModelConfig`.
    device : where the network runs.
    tile_size, overlap : overlap-tile size and overlap in pixels; ``tile_size`` a multiple of 16
        and more than twice ``overlap``; None: :func:`~nucleiseg.inference.tiling.default_tile_size`
        of the device (768 on the CPU, 1024 on CUDA).
    batch_size : tiles per network call; None: :func:`~nucleiseg.inference.tiling.default_tile_batch`
        of the device (1 on the CPU, 4 on CUDA).
    channels_last, compile : speed options (see the module docstring).
    fold_batchnorm : run a copy of ``model`` with its BatchNorm layers folded into the
        convolutions (:func:`~nucleiseg.model.unet.fold_batchnorm`; faster, same function). Only
        for weights that no longer change: :meth:`from_file` sets it; a model still in training
        keeps False, so validation sees its current weights.
    precision : "auto", "fp32" or "bf16": the network's autocast
        (:func:`nucleiseg.hardware.autocast_dtype`; "auto" is bf16 on CUDA and on CPUs with
        native bf16, float32 elsewhere); the diameter estimate runs in float32 always.

    Raises
    ------
    ValueError
        on a bad tile size or precision.
    """

    def __init__(self, model: torch.nn.Module, config: ModelConfig, device: torch.device,
                 tile_size: int | None = None, overlap: int = DEFAULT_OVERLAP,
                 batch_size: int | None = None, channels_last: bool = True, compile: bool = False,
                 precision: Precision = DEFAULT_PRECISION, fold_batchnorm: bool = False):
        tile_size = default_tile_size(device.type) if tile_size is None else tile_size
        check_tiles(tile_size, overlap)
        self.autocast = autocast_dtype(precision, device.type)
        self.model = model.to(device).eval()
        self.channels_last, self.compiled = channels_last, compile
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        network = folded_batchnorm(self.model) if fold_batchnorm else self.model
        self.network = self._maybe_compiled(network, compile)
        # Folded weights no longer change, so on the CPU a bf16 copy of the network replaces bf16
        # autocast: the same arithmetic (autocast runs every convolution on bf16 casts of its input,
        # weights and bias, and the pooling, ReLU and concatenation in their input's dtype; logits
        # equal bit for bit in tests/test_precision.py), without autocast's casts at each call
        # (a 608 px tile 54 -> 50 ms, 2-core AMD EPYC).
        bf16 = fold_batchnorm and device.type == "cpu" and self.autocast == torch.bfloat16
        self.network_bf16 = (self._maybe_compiled(copy.deepcopy(network).to(torch.bfloat16), compile)
                             if bf16 else None)
        self.config = config
        self.device = device
        self.tile_size, self.overlap = tile_size, overlap
        self.batch_size = batch_size or default_tile_batch(device.type)

    @staticmethod
    def _maybe_compiled(network: torch.nn.Module, compile: bool) -> torch.nn.Module:
        return torch.compile(network, dynamic=True) if compile else network

    @property
    def backend(self) -> str:
        """What runs the network: "torch" (here) or "onnx"
        (:class:`~nucleiseg.inference.onnx_backend.OnnxPredictor`)."""
        return "torch"

    @property
    def watershed(self) -> WatershedParams:
        """The model's tuned watershed values (used when ``PredictOptions.watershed`` is None)."""
        return self.config.watershed

    @property
    def pooling_multiple(self) -> int:
        """2**depth of the U-Net: tiles and blocks start at multiples of it (1 for other modules)."""
        return 2 ** getattr(self.model, "depth", 0)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto",
                  **kwargs) -> "Predictor":
        """Read a model file (:func:`~nucleiseg.model.file.read_model_file`; None = the bundled
        model) onto ``device``; ``kwargs`` as for the constructor. Raises ModelFileError."""
        device = choose_device(device)
        model, config = read_model_file(path, device)
        return cls(model, config, device, **{"fold_batchnorm": True, **kwargs})

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray, float32: bool = False) -> np.ndarray:
        """(N, C, H, W) float32 network inputs -> (N, 3, H, W) float32 softmax probabilities;
        ``float32`` runs the network without autocast whatever the precision."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = None if float32 else self.autocast
        if autocast is not None and self.network_bf16 is not None:
            logits = self.network_bf16(x.to(torch.bfloat16))
        else:
            with torch.autocast(self.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                logits = self.network(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def probabilities_of_normalized(self, x: np.ndarray, tta: bool = False, float32: bool = False,
                                    tile_size: int | None = None) -> np.ndarray:
        """Probabilities (3, H, W) float32 of a network input (C, H, W) float32
        (:meth:`normalize`); an (H, W) array is taken as one channel. ``float32``: no autocast;
        ``tile_size``: tiles of at most this side instead of the predictor's."""
        x = x[None] if x.ndim == 2 else x
        t = self.tile_size if tile_size is None else tile_size
        if not tta:
            return self._tiled(x, float32, t)
        acc = np.zeros((3,) + x.shape[1:], np.float32)
        for k in range(8):
            acc += dihedral_inverse(self._tiled(np.ascontiguousarray(dihedral(x, k)), float32, t), k)
        return acc / 8.0

    def _tiled(self, x: np.ndarray, float32: bool, t: int) -> np.ndarray:
        h, w = x.shape[-2:]
        if h <= t and w <= t:
            return self._forward(x[None], float32)[0]
        # The U-Net's max-pooling grid makes it shift-equivariant only for shifts by multiples of
        # 2**depth, so every tile starts at such a multiple: the image is first padded to a
        # multiple (as the network pads a whole image), tile lengths and strides are multiples too.
        m = self.pooling_multiple
        if h % m or w % m:
            return self._tiled(pad_to_multiple(x, m), float32, t)[:, :h, :w]
        (th, row_starts), (tw, col_starts) = tile_layout(h, t, self.overlap, m), tile_layout(w, t, self.overlap, m)
        window = blend_window((th, tw), self.overlap)
        acc = np.zeros((3, h, w), np.float32)
        norm = np.zeros((h, w), np.float32)
        corners = [(r, c) for r in row_starts for c in col_starts]
        for i in range(0, len(corners), self.batch_size):
            chunk = corners[i : i + self.batch_size]
            probs = self._forward(np.stack([x[:, r : r + th, c : c + tw] for r, c in chunk]), float32)
            for (r, c), p in zip(chunk, probs):
                acc[:, r : r + th, c : c + tw] += p * window
                norm[r : r + th, c : c + tw] += window
        return acc / norm

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """The model's network input of ``image``: (C, H, W) float32 in [0, 1]
        (:func:`nucleiseg.transforms.network_input` with the model's normalisation)."""
        norm = self.config.normalization
        return network_input(image, norm.channels, norm.p_low, norm.p_high)

    def predict_probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Softmax probabilities of (mask - border, border, background).

        ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype -> (3, H, W) float32.
        Any size: small images go through whole (padded to a multiple of 2**depth and cropped
        back), large ones by overlap-tile. ``tta`` averages the 8 dihedral transforms.
        """
        return self.probabilities_of_normalized(self.normalize(image), tta)

    def probabilities(self, x: np.ndarray, tta: bool = False, scale: float = 1.0, float32: bool = False,
                      tile_size: int | None = None) -> np.ndarray:
        """:meth:`probabilities_of_normalized` of the network input ``x`` (C, H, W) resized by
        ``scale``, resized back to (3, H, W)."""
        if scale == 1.0:
            return self.probabilities_of_normalized(x, tta, float32, tile_size)
        h, w = x.shape[-2:]
        scaled = resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))
        return resize(self.probabilities_of_normalized(scaled, tta, float32, tile_size), (h, w))

    def scale_for(self, image: np.ndarray, options: PredictOptions,
                  passes: dict[float, np.ndarray] | None = None) -> tuple[float | None, float]:
        """(diameter, scale) for ``image`` under ``options.diameter`` (see the module docstring).
        An estimate for an image larger than one tile uses its central tile; for an image that
        fits in one tile, the estimate's probabilities by scale go into ``passes`` when given
        (:meth:`segment` reuses them instead of running the network again)."""
        if options.diameter is None or self.config.nucleus_diameter is None:
            return None, 1.0
        if options.diameter != "auto":
            diameter = float(options.diameter)
            return diameter, self._scale_of(diameter)
        estimate = self._estimate_diameter(image, options, passes)
        if estimate is None:
            return None, 1.0
        diameter, second_pass = estimate
        scale = self._scale_of(diameter)
        # the second pass's factor stands (and its network pass is reused) when the refined
        # estimate asks for one within REUSE_TOLERANCE of it
        if second_pass is not None and abs(scale / second_pass - 1.0) < REUSE_TOLERANCE:
            scale = second_pass
        return diameter, scale

    def _scale_of(self, diameter: float) -> float:
        """The resize factor for nuclei ``diameter`` pixels across: the model's training diameter
        over it, clipped to :data:`SCALE_RANGE`; 1 when within 10 % of 1."""
        scale = float(np.clip(self.config.nucleus_diameter / diameter, *SCALE_RANGE))
        return 1.0 if abs(scale - 1.0) < 0.1 else scale

    def _estimate_diameter(self, image: np.ndarray, options: PredictOptions,
                           passes: dict[float, np.ndarray] | None = None) -> tuple[float, float | None] | None:
        """(the nuclei's median diameter in original pixels, the second pass's factor or None) in
        ``image``'s central :data:`SIZE_REGION` pixels square: a first pass at the original scale, and when that suggests
        rescaling, a second pass at the suggested factor, where fragments of large nuclei join
        (None: too few nuclei). Both passes run in float32 whatever the precision (a bf16
        rounding near a threshold can move the estimate, and with it every pixel's scale). When
        the region is the whole image, each pass's probabilities go into ``passes`` by factor."""
        h, w = image.shape[:2]
        t = SIZE_REGION
        r0, c0 = max(0, (h - t) // 2), max(0, (w - t) // 2)
        x = self.normalize(image[r0 : r0 + t, c0 : c0 + t])
        keep = passes if passes is not None and h <= t and w <= t else {}
        watershed = options.watershed or self.watershed
        keep[1.0] = self.probabilities(x, options.tta, float32=True, tile_size=SIZE_REGION)
        diameter, n = median_diameter(probabilities_to_labels(keep[1.0], watershed))
        scale = self._scale_of(diameter) if n else 1.0
        if n < MIN_NUCLEI_FOR_SIZE:
            return None
        if scale == 1.0:
            return diameter, None
        keep[scale] = self.probabilities(x, options.tta, scale, float32=True, tile_size=SIZE_REGION)
        refined, m = median_diameter(probabilities_to_labels(keep[scale], scaled_watershed(watershed, scale)))
        return (refined, scale) if m >= MIN_NUCLEI_FOR_SIZE else (diameter, scale)

    def segment(self, image: np.ndarray, options: PredictOptions | None = None) -> Segmentation:
        """:meth:`predict` with the diameter and scale it used."""
        options = options or PredictOptions()
        passes: dict[float, np.ndarray] = {}  # the estimate's network passes, reused when they cover the image
        diameter, scale = self.scale_for(image, options, passes)
        watershed = scaled_watershed(options.watershed or self.watershed, scale)
        if is_huge(image.shape, options.block_size):
            labels = predict_blockwise(self, image, options.block_size, watershed=watershed, tta=options.tta,
                                       scale=scale)[0]
        else:
            probabilities = passes[scale] if scale in passes else self.probabilities(self.normalize(image), options.tta,
                                                                                      scale)
            labels = probabilities_to_labels(probabilities, watershed)
        return Segmentation(labels, diameter, scale)

    def predict(self, image: np.ndarray, options: PredictOptions | None = None) -> np.ndarray:
        """Label image of the nuclei in ``image`` ((H, W) or (H, W, C), C in 1..4, any numeric dtype).

        ``options``: watershed values (None: the model's), ``tta``, ``diameter`` (rescaling, see
        the module docstring), and ``block_size``: an image with a side over twice it is predicted
        block by block.

        Returns
        -------
        (H, W) label image, 0 = background, nuclei numbered 1..N with no gap: int32, or uint32
        for images predicted block by block.
        """
        return self.segment(image, options).labels


def scaled_watershed(watershed: WatershedParams, scale: float) -> WatershedParams:
    """``watershed`` for an image resized by ``scale``: its minimum area (pixels at the model's
    scale) in pixels of the original image."""
    return watershed if scale == 1.0 else replace(watershed, min_area=int(round(watershed.min_area / scale**2)))


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "auto", backend: str = "torch",
               **kwargs) -> Predictor:
    """Load a model file (None: the bundled model) as a :class:`Predictor` running on ``backend``
    (one of :data:`BACKENDS`): "torch", or "onnx" (onnxruntime, the ``onnx`` extra), which takes an
    exported ``.onnx`` file or a nucleiseg model file (exported in memory).

    ``model.predict(image)`` -> (H, W) int32 label image; ``model.predict_probabilities(image)``
    -> (3, H, W) float32. ``device`` is 'auto' (CUDA when available), 'cpu' or 'cuda'; ``kwargs``
    go to :class:`Predictor` (``tile_size``, ``overlap``, ``batch_size``, and PyTorch's only
    ``channels_last`` and ``compile``).

    Raises
    ------
    ModelFileError
        if the file is missing, not a nucleiseg model, does not match its configuration, or is an
        ``.onnx`` file given to the torch backend.
    ValueError
        on an unknown backend, or ``compile`` with "onnx".
    MissingDependencyError
        for "onnx" without onnx / onnxruntime installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnx":
        from .onnx_backend import OnnxPredictor

        if kwargs.pop("compile", False):
            raise ValueError("--compile applies to the torch backend only")
        kwargs.pop("channels_last", None)
        return OnnxPredictor.from_file(path, device, **kwargs)
    if path is not None and str(path).lower().endswith(".onnx"):
        raise ModelFileError(f"{path}: an ONNX model; run it with --backend onnx")
    return Predictor.from_file(path, device, **kwargs)
