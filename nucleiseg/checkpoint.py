"""Model files: the U-Net weights plus everything needed to rebuild it and its pre-processing.

A model file is a ``torch.save`` of a dict holding only tensors and plain data (str, int,
float, list, dict), read back with ``torch.load(..., weights_only=True)``, so loading a model
never unpickles arbitrary objects::

    {"format": "nucleiseg-model", "version": 1,
     "config": {"unet": {...}, "normalization": {...}, "watershed": {...}, "border_width": int,
                "training": {...}, "validation": {...}},
     "state_dict": {name: tensor}}

Weights are stored as float16 to keep the bundled model small and loaded back as float32.
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

import torch

from .data.images import atomic_write
from .errors import ModelFileError
from .model import UNet, UNetConfig

FORMAT = "nucleiseg-model"
VERSION = 1


def bundled_model_path() -> Path:
    """Path of the model that ships inside the package (``nucleiseg/models/default.pt``)."""
    return Path(str(resources.files("nucleiseg").joinpath("models", "default.pt")))


def save_model(path: str | os.PathLike, model: UNet, config: dict, half: bool = True) -> None:
    """Write a model file atomically. ``config`` is plain data (see module docstring)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "config": {**config, "unet": model.config.to_dict()},
               "state_dict": state}

    def _write(tmp: Path) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, _write)


def load_model(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> tuple[UNet, dict]:
    """Load a model file into an eval-mode :class:`UNet` on ``device``.

    Parameters
    ----------
    path : model file; None loads the bundled model.
    device : torch device for the weights.

    Returns
    -------
    (model, config) where config is the plain-data dict stored with the weights.

    Raises
    ------
    ModelFileError
        if the file is missing, not a torch file, holds anything but tensors and plain data
        (e.g. a crafted pickle), is not a nucleiseg model, or its weights do not fit its config.
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
    config = payload.get("config") or {}
    try:
        unet_config = UNetConfig.from_dict(config["unet"])
        model = UNet(unet_config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: weights do not match the stored U-Net config ({exc})") from None
    return model.to(device).eval(), config
