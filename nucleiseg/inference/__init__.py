"""Prediction, in pipeline order.

- :mod:`~nucleiseg.inference.predictor`: :class:`Predictor` (normalise, U-Net, watershed) and
  :class:`PredictOptions`, the one shape prediction settings travel in;
- :mod:`~nucleiseg.inference.tiling`: overlap-tile layout and blending;
- :mod:`~nucleiseg.inference.blockwise`: huge images block by block;
- :mod:`~nucleiseg.inference.batch`: many files into an output folder;
- :mod:`~nucleiseg.inference.cluster`: the same on a Dask cluster (the ``cluster`` extra);
- :mod:`~nucleiseg.inference.onnx_backend`: the network on onnxruntime (the ``onnx`` extra).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "batch": ["PredictResult", "predict_files"],
    "predictor": ["PredictOptions", "Predictor", "choose_device", "load_model"],
    "onnx_backend": ["OnnxPredictor"],
})

#: What can run the network: PyTorch, or onnxruntime (the ``onnx`` extra). Here, not in
#: :mod:`~nucleiseg.inference.predictor`, so the command line reads it without importing PyTorch.
BACKENDS = ("torch", "onnx")

#: Default nucleus diameter handling (:attr:`PredictOptions.diameter`): estimate each image's and
#: rescale to the model's training diameter. Here for the same reason as :data:`BACKENDS`.
DEFAULT_DIAMETER = "auto"

#: Default precision of the network at inference (:class:`Predictor` ``precision``): bf16 autocast
#: on CUDA and on CPUs with native bf16, float32 elsewhere (:func:`nucleiseg.hardware.autocast_dtype`).
DEFAULT_PRECISION = "auto"
