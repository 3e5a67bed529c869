"""Inference: image -> normalised input -> U-Net -> softmax probabilities -> watershed labels.

Images larger than ``tile_size`` are predicted by overlap-tile (U-Net paper, Fig. 2): the fewest
tiles of at most ``tile_size`` pixels that overlap by at least ``overlap`` pixels, each shrunk to
just cover the image (:func:`tile_layout`), run in batches, blended with weights that
ramp linearly from the tile edges over the overlap, so memory is bounded by the tile batch and
seams do not show. Test-time augmentation (``tta=True``) averages the 8 dihedral transforms,
each prediction transformed back first.

Speed options: the network runs under ``torch.inference_mode``, in bf16 autocast on CUDA, with
channels-last tensors (``channels_last=True``, the default: faster convolutions on CPU oneDNN and
CUDA cuDNN), and optionally compiled with ``torch.compile`` (``compile=True``: the first call per
input shape pays the compilation, so it only pays off for many images of one size).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .augment import dihedral, dihedral_inverse
from .checkpoint import load_model
from .data.images import normalize_image
from .model import UNet
from .postprocess import WatershedParams, probabilities_to_labels


def choose_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' / 'cuda' as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels with ``stride`` covering ``length`` (last one flush)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(tile length, start offsets) of overlap-tiles covering ``length`` pixels along one axis.

    The fewest tiles of at most ``tile`` pixels that overlap by at least ``overlap`` pixels, each
    shrunk to the smallest multiple of ``multiple`` that still covers ``length`` with them, so
    the network sees little more than the image: 1040 px with ``tile`` 1024 and ``overlap`` 64 is 2
    tiles of 560 px, not 2 of 1024. Starts are multiples of ``multiple`` when ``length`` is.
    ``length <= tile`` gives one tile, the whole length.
    """
    if length <= tile:
        return length, [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, -(-(length + (n - 1) * overlap) // (n * multiple)) * multiple)
    stride = max(multiple, (size - overlap) // multiple * multiple)
    return size, tile_starts(length, size, stride)


def blend_window(shape: int | tuple[int, int], overlap: int) -> np.ndarray:
    """(H, W) float32 weights (``shape`` an int for a square): 1 inside, ramping down linearly over
    ``overlap`` px to every edge."""
    h, w = (shape, shape) if isinstance(shape, int) else shape

    def ramp(n: int) -> np.ndarray:
        r = np.minimum(1.0, (np.arange(n) + 0.5) / max(overlap, 1))
        return np.minimum(r, r[::-1]).astype(np.float32)

    return np.outer(ramp(h), ramp(w))


class Predictor:
    """A loaded model with its normalisation and watershed parameters.

    Build one with :meth:`from_file` (None = the bundled model).
    """

    def __init__(self, model: UNet, config: dict, device: torch.device, tile_size: int = 1024, overlap: int = 64,
                 batch_size: int = 4, channels_last: bool = True, compile: bool = False):
        self.model = model.to(device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.network = torch.compile(self.model, dynamic=True) if compile else self.model
        self.config = config
        self.device = device
        norm = config.get("normalization", {})
        self.p_low = float(norm.get("p_low", 1.0))
        self.p_high = float(norm.get("p_high", 99.8))
        self.watershed = WatershedParams(**config.get("watershed", {}))
        if tile_size % 16 or tile_size <= 2 * overlap:
            raise ValueError(f"tile_size must be a multiple of 16 and > 2 * overlap, got {tile_size}, {overlap}")
        self.tile_size, self.overlap, self.batch_size = tile_size, overlap, batch_size

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto",
                  **kwargs) -> "Predictor":
        """Load a model file (see :func:`nucleiseg.checkpoint.load_model`); raises ModelFileError."""
        device = choose_device(device) if isinstance(device, str) else device
        model, config = load_model(path, device)
        return cls(model, config, device, **kwargs)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 normalised images -> (N, 3, H, W) float32 softmax probabilities."""
        x = torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.network(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def probabilities_of_normalized(self, x: np.ndarray, tta: bool = False) -> np.ndarray:
        """Probabilities (3, H, W) float32 of an already normalised (H, W) float32 image."""
        if not tta:
            return self._tiled(x)
        acc = np.zeros((3,) + x.shape, np.float32)
        for k in range(8):
            acc += dihedral_inverse(self._tiled(np.ascontiguousarray(dihedral(x, k))), k)
        return acc / 8.0

    def _tiled(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        t = self.tile_size
        if h <= t and w <= t:
            return self._forward(x[None])[0]
        # The U-Net's max-pooling grid makes it shift-equivariant only for shifts by multiples of
        # 2**depth, so every tile starts at such a multiple: the image is first mirror-padded to a
        # multiple (as the network pads a whole image), tile lengths and strides are multiples too.
        m = 2 ** getattr(self.model, "depth", 0)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "edge"
            return self._tiled(np.pad(x, ((0, ph), (0, pw)), mode=mode))[:, :h, :w]
        (th, row_starts), (tw, col_starts) = tile_layout(h, t, self.overlap, m), tile_layout(w, t, self.overlap, m)
        window = blend_window((th, tw), self.overlap)
        acc = np.zeros((3, h, w), np.float32)
        norm = np.zeros((h, w), np.float32)
        corners = [(r, c) for r in row_starts for c in col_starts]
        for i in range(0, len(corners), self.batch_size):
            chunk = corners[i : i + self.batch_size]
            probs = self._forward(np.stack([x[r : r + th, c : c + tw] for r, c in chunk]))
            for (r, c), p in zip(chunk, probs):
                acc[:, r : r + th, c : c + tw] += p * window
                norm[r : r + th, c : c + tw] += window
        return acc / norm

    def predict_probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Softmax probabilities of (mask - border, border, background).

        ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype -> (3, H, W) float32.
        Any size: small images go through whole (padded to a multiple of 2**depth and cropped
        back), large ones by overlap-tile. ``tta`` averages the 8 dihedral transforms.
        """
        return self.probabilities_of_normalized(normalize_image(image, self.p_low, self.p_high), tta)

    def predict(self, image: np.ndarray, params: WatershedParams | None = None, tta: bool = False) -> np.ndarray:
        """Label image of the nuclei in ``image``: (H, W) int32, 0 = background, 1..N nuclei."""
        return probabilities_to_labels(self.predict_probabilities(image, tta), params or self.watershed)
