"""The network and its files.

- :mod:`~nucleiseg.model.unet`: the U-Net (PyTorch);
- :mod:`~nucleiseg.model.config`: :class:`ModelConfig`, what a model file stores besides the
  weights (plain dataclasses, no PyTorch);
- :mod:`~nucleiseg.model.file`: writing and reading model files safely.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "config": ["ModelConfig", "NormalizationConfig", "UNetConfig", "ValidationRecord"],
    "file": ["ModelFile", "bundled_model_path", "read_model_file", "save_model_file"],
    "unet": ["UNet"],
})
