"""Model export for the tools users already run: ONNX (onnxruntime, Fiji / deepImageJ, QuPath,
ilastik) and bioimage.io model packages (:mod:`nucleiseg.bioimageio`).

The exported network is :class:`~nucleiseg.model.unet_core.SoftmaxUNet`: the model's U-Net with
the softmax over channels inside, mapping a float32 network input (N, C, H, W), H and W multiples
of ``2**depth`` (16 for the bundled model), to (N, 3, H, W) probabilities of (mask - border,
border, background). What lies outside the network stays with nucleiseg and is documented where
it cannot travel: the input (:func:`nucleiseg.transforms.network_input`), the padding of other
sizes, tiling, and the marker-controlled watershed (:mod:`nucleiseg.postprocess`). So an ONNX
file needs nucleiseg's pre- and post-processing around it (the gap Cellpose issue 821 names); the
file carries the model's configuration (watershed values, normalisation, diameter) in its
metadata so ``predict --backend onnx`` needs nothing else.

ONNX format: opset :data:`ONNX_OPSET`, input ``input`` (batch, C, height, width), output
``probabilities``, the three dynamic; metadata entries ``format`` = "nucleiseg-model" and
``nucleiseg_config`` = the JSON of :meth:`~nucleiseg.model.config.ModelConfig.to_dict`.
Exported with PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .errors import MissingDependencyError, ModelFileError
from .io import atomic_write
from .model.config import ModelConfig

#: ONNX operator set of exported files (onnxruntime >= 1.14 runs it).
ONNX_OPSET = 17
#: Metadata keys of exported ONNX files.
ONNX_FORMAT_KEY, ONNX_CONFIG_KEY = "format", "nucleiseg_config"
ONNX_FORMAT = "nucleiseg-model"
ONNX_INPUT, ONNX_OUTPUT = "input", "probabilities"


def softmax_network(model, config: ModelConfig):
    """The :class:`~nucleiseg.model.unet_core.SoftmaxUNet` (CPU, eval mode, float32) carrying the
    weights of a read model file's U-Net (:class:`~nucleiseg.model.file.ModelFile`: model, config)."""
    from .model.unet_core import SoftmaxUNet

    net = SoftmaxUNet(config.unet.in_channels, config.unet.out_channels, config.unet.features, config.unet.block)
    net.load_state_dict(model.state_dict())
    return net.cpu().eval()


def export_network(path: str | os.PathLike | None = None):
    """:func:`softmax_network` of a model file (None: the bundled model), and its
    :class:`~nucleiseg.model.config.ModelConfig`.

    Raises
    ------
    ModelFileError
        as :func:`~nucleiseg.model.file.read_model_file`.
    """
    from .model.file import read_model_file

    model, config = read_model_file(path, "cpu")
    return softmax_network(model, config), config


def network_onnx(net, config: ModelConfig) -> bytes:
    """A serialized ONNX model (see the module docstring) of :func:`softmax_network`'s ``net``,
    with ``config`` in its metadata.

    Raises
    ------
    MissingDependencyError
        if the ``onnx`` package is not installed (``pip install 'nucleiseg[onnx]'``).
    """
    import warnings

    import torch

    onnx = _require("onnx", "ONNX export")
    depth = len(config.unet.features) - 1
    example = torch.zeros(1, config.unet.in_channels, 2**depth * 4, 2**depth * 4)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes, not the user's concern
        torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=ONNX_OPSET, input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes})
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in ((ONNX_FORMAT_KEY, ONNX_FORMAT), (ONNX_CONFIG_KEY, json.dumps(config.to_dict()))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "nucleiseg"
    proto.doc_string = ("nucleiseg U-Net: network input (N, C, H, W) float32 in [0, 1], H and W multiples of "
                        f"{2**depth} -> softmax probabilities (N, 3, H, W) of (mask - border, border, background)")
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_bytes(path: str | os.PathLike | None = None) -> bytes:
    """:func:`network_onnx` of a model file (None: the bundled model).

    Raises
    ------
    ModelFileError
        if the model file cannot be read.
    MissingDependencyError
        if the ``onnx`` package is not installed (``pip install 'nucleiseg[onnx]'``).
    """
    return network_onnx(*export_network(path))


def export_onnx(model: str | os.PathLike | None, out: str | os.PathLike) -> Path:
    """Write the ONNX file of a model file (None: the bundled model) to ``out``, atomically.

    Raises
    ------
    ModelFileError, MissingDependencyError
        as :func:`onnx_bytes`.
    """
    data = onnx_bytes(model)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    return Path(out)


def read_onnx_config(data: bytes, name: str = "ONNX model") -> ModelConfig:
    """The :class:`~nucleiseg.model.config.ModelConfig` stored in an exported ONNX model's metadata.

    Raises
    ------
    ModelFileError
        if ``data`` is not an ONNX model exported by nucleiseg (``name`` names it in the message).
    """
    onnx = _require("onnx", "reading ONNX models")
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # DecodeError and friends
        raise ModelFileError(f"{name}: not a readable ONNX model ({type(exc).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(ONNX_FORMAT_KEY) != ONNX_FORMAT or ONNX_CONFIG_KEY not in meta:
        raise ModelFileError(f"{name}: an ONNX model without nucleiseg's metadata; export it with "
                             "'nucleiseg export MODEL --onnx FILE'")
    try:
        return ModelConfig.from_dict(json.loads(meta[ONNX_CONFIG_KEY]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: invalid model configuration in its metadata ({exc})") from None


def _require(module: str, what: str):
    """Import an optional dependency, or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = {"onnx": "onnx", "onnxruntime": "onnx"}.get(module, module)
        raise MissingDependencyError(f"{what} needs the '{module}' package: pip install 'nucleiseg[{extra}]'") from None
