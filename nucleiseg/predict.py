"""Inference: image -> normalised input -> U-Net -> softmax probabilities -> watershed labels."""

from __future__ import annotations

import os

import numpy as np
import torch

from .checkpoint import load_model
from .data.images import normalize_image
from .model import UNet
from .postprocess import WatershedParams, probabilities_to_labels


def choose_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' / 'cuda' as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Predictor:
    """A loaded model with its normalisation and watershed parameters.

    Build one with :meth:`from_file` (None = the bundled model).
    """

    def __init__(self, model: UNet, config: dict, device: torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.device = device
        norm = config.get("normalization", {})
        self.p_low = float(norm.get("p_low", 1.0))
        self.p_high = float(norm.get("p_high", 99.8))
        self.watershed = WatershedParams(**config.get("watershed", {}))

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto") -> "Predictor":
        """Load a model file (see :func:`nucleiseg.checkpoint.load_model`); raises ModelFileError."""
        device = choose_device(device) if isinstance(device, str) else device
        model, config = load_model(path, device)
        return cls(model, config, device)

    @torch.inference_mode()
    def predict_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax probabilities of (mask - border, border, background).

        ``image`` (H, W) or (H, W, C), C in 1..4, any numeric dtype -> (3, H, W) float32.
        Any size: the U-Net pads to a multiple of 2**depth and crops back.
        """
        x = normalize_image(image, self.p_low, self.p_high)
        t = torch.from_numpy(x)[None, None].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(t)
        return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()

    def predict(self, image: np.ndarray, params: WatershedParams | None = None) -> np.ndarray:
        """Label image of the nuclei in ``image``: (H, W) int32, 0 = background, 1..N nuclei."""
        return probabilities_to_labels(self.predict_probabilities(image), params or self.watershed)
