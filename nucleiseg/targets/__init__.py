"""Training targets from label images.

- :mod:`~nucleiseg.targets.border`: the contact border between touching nuclei and the 2- and
  3-channel targets of the DSB2018 winning solution;
- :mod:`~nucleiseg.targets.distance`: exact Euclidean distance transforms in numba, and the
  distances to the two nearest nuclei;
- :mod:`~nucleiseg.targets.weightmap`: the U-Net paper's pixel weight map (eq. 2);
- :mod:`~nucleiseg.targets.convert`: ``nucleiseg convert``, a DSB2018 folder to label images and
  training arrays on disk.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "border": ["BACKGROUND", "BORDER", "DEFAULT_BORDER_WIDTH", "INTERIOR", "class_map", "contact_border",
               "sigmoid_targets", "softmax_targets"],
    "distance": ["edt", "two_nearest_distances"],
    "weightmap": ["class_balance_weights", "unet_weight_map"],
})
