"""``predict --backend onnx``: the network run by onnxruntime instead of PyTorch.

Everything but the network call is :class:`~nucleiseg.inference.predictor.Predictor`'s own
(normalisation, tiling, TTA, rescaling, block-wise prediction, watershed), so both backends give
the same labels up to float rounding in the network (measured in tests/test_export.py and the
README). The ONNX graph takes sides that are multiples of ``2**depth``; other sizes are padded
here by the U-Net's own rule (:func:`nucleiseg.transforms.pad_to_shape`) and cropped back.
Needs the ``onnx`` extra (``pip install 'nucleiseg[onnx]'``: onnx and onnxruntime).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..export import ONNX_INPUT, _require, export_network, network_onnx, read_onnx_config
from ..model.config import ModelConfig
from ..transforms import pad_to_shape, padding_to_multiple
from .predictor import Predictor, check_tiles
from .tiling import DEFAULT_OVERLAP, default_tile_batch, default_tile_size


class OnnxPredictor(Predictor):
    """A :class:`~nucleiseg.inference.predictor.Predictor` whose network is an onnxruntime session.

    Parameters
    ----------
    data : a serialized ONNX model exported by nucleiseg (:func:`nucleiseg.export.onnx_bytes`).
    config : its :class:`~nucleiseg.model.config.ModelConfig`.
    device : "cpu", or "cuda" for onnxruntime's CUDA provider when installed ("auto": CUDA if
        available).
    tile_size, overlap, batch_size : as for :class:`Predictor`.

    Raises
    ------
    ValueError
        on a bad tile size.
    MissingDependencyError
        if onnxruntime is not installed.
    """

    def __init__(self, data: bytes, config: ModelConfig, device: str = "cpu", tile_size: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, batch_size: int | None = None):
        ort = _require("onnxruntime", "the ONNX backend")
        available = ort.get_available_providers()
        cuda = device in ("cuda", "auto") and "CUDAExecutionProvider" in available
        if device == "cuda" and not cuda:
            raise ValueError("the ONNX backend on CUDA needs onnxruntime-gpu (CUDAExecutionProvider not available)")
        self.device = torch.device("cuda" if cuda else "cpu")
        self.tile_size = default_tile_size(self.device.type) if tile_size is None else tile_size
        check_tiles(self.tile_size, overlap)
        providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(data, providers=providers)
        self.model = None
        self.network = self.network_bf16 = None
        self.channels_last = self.compiled = False
        self.autocast = None  # onnxruntime runs the exported float32 graph
        self.config = config
        self.overlap = overlap
        self.batch_size = batch_size or default_tile_batch(self.device.type)

    @property
    def backend(self) -> str:
        return "onnx"

    @property
    def pooling_multiple(self) -> int:
        return 2 ** self.config.unet.depth

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  **kwargs) -> "OnnxPredictor":
        """An exported ``.onnx`` file, or a nucleiseg model file (None: the bundled model)
        exported in memory. Raises ModelFileError, MissingDependencyError."""
        device = device.type if isinstance(device, torch.device) else device
        if path is not None and Path(path).suffix.lower() == ".onnx":
            if not Path(path).is_file():
                raise ModelFileError(f"{path}: no such model file")
            data = Path(path).read_bytes()
            return cls(data, read_onnx_config(data, str(path)), device, **kwargs)
        net, config = export_network(path)
        return cls(network_onnx(net, config), config, device, **kwargs)

    def _forward(self, batch: np.ndarray, float32: bool = False) -> np.ndarray:
        """(N, C, H, W) float32 network inputs -> (N, 3, H, W) float32 softmax probabilities
        (always float32: ``float32`` is there for the PyTorch predictor's signature)."""
        h, w = batch.shape[-2:]
        ph, pw = padding_to_multiple((h, w), self.pooling_multiple)
        x = np.ascontiguousarray(pad_to_shape(batch, (h + ph, w + pw)), dtype=np.float32)
        return self.session.run(None, {ONNX_INPUT: x})[0][..., :h, :w]
