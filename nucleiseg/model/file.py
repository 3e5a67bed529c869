"""Model files: the U-Net weights plus the :class:`~nucleiseg.model.config.ModelConfig`.

A model file is a ``torch.save`` of a dict holding only tensors and plain data (str, int,
float, list, dict), read back with ``torch.load(..., weights_only=True)``, so loading a model
never unpickles arbitrary objects::

    {"format": "nucleiseg-model", "version": 1, "config": ModelConfig.to_dict(),
     "state_dict": {name: tensor}}

Weights are stored as float16 to keep the bundled model small and loaded back as float32.
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import ModelFileError
from ..io import atomic_write
from .config import ModelConfig
from .unet import UNet

FORMAT = "nucleiseg-model"
VERSION = 1


class ModelFile(NamedTuple):
    """A model file read back: the eval-mode network and its configuration."""

    model: UNet
    config: ModelConfig


def bundled_model_path() -> Path:
    """Path of the model that ships inside the package (``nucleiseg/models/default.pt``)."""
    return Path(str(resources.files("nucleiseg").joinpath("models", "default.pt")))


def save_model_file(path: str | os.PathLike, model: UNet, config: ModelConfig, half: bool = True) -> None:
    """Write ``model``'s weights and ``config`` (its ``unet`` entry taken from the model) atomically.

    ``half`` stores floating-point weights as float16.
    """
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "config": config.replace(unet=model.config).to_dict(),
               "state_dict": state}

    def _write(tmp: Path) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, _write)


def read_model_file(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> ModelFile:
    """Read a model file into an eval-mode :class:`UNet` on ``device`` and its configuration.

    Parameters
    ----------
    path : model file; None reads the bundled model.
    device : torch device for the weights.

    Returns
    -------
    :class:`ModelFile` (model, config).

    Raises
    ------
    ModelFileError
        if the file is missing, not a torch file, holds anything but tensors and plain data
        (e.g. a crafted pickle), is not a nucleiseg model, has an invalid configuration, or its
        weights do not fit its configuration.
    """
    path = Path(path) if path is not None else bundled_model_path()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(f"{path}: not a loadable nucleiseg model file ({type(exc).__name__}: {first_line})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a nucleiseg model file (missing format '{FORMAT}')")
    if payload.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {payload.get('version')} is not supported (need {VERSION})")
    try:
        config = ModelConfig.from_dict(payload.get("config") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: invalid model configuration ({type(exc).__name__}: {exc})") from None
    try:
        model = UNet(config.unet)
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: weights do not match the stored U-Net config ({exc})") from None
    return ModelFile(model.to(device).eval(), config)
