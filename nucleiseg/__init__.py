"""nucleiseg: find every cell nucleus in a microscopy image and give each its own label.

The pipeline, one module each::

    data (DSB2018 reading, RLE, images) -> targets -> model (U-Net) -> train
    -> predict -> postprocess (watershed) -> metrics (DSB2018 score), and cli on top.

Example
-------
>>> import nucleiseg
>>> model = nucleiseg.load_model()          # the bundled model
>>> labels = model.predict(nucleiseg.read_image("cells.png"))   # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .data.dsb2018 import DSBItem, Defect, iter_dsb2018, read_item
from .data.images import normalize_image, read_image, read_label_image, write_label_image
from .data.rle import decode_labels, decode_rle, encode_labels, read_solution_csv, write_submission
from .errors import AnnotationError, ImageReadError, ModelFileError, NucleisegError, RLEError
from .metrics import MatchingStats, dataset_table, dsb_score, matching_table
from .model import UNet, UNetConfig
from .postprocess import WatershedParams, probabilities_to_labels
from .predict import Predictor


def load_model(path: str | None = None, device: str = "auto", **kwargs) -> Predictor:
    """Load a model file (None: the bundled model) as a :class:`Predictor`.

    ``model.predict(image)`` -> (H, W) int32 label image; ``model.predict_probabilities(image)``
    -> (3, H, W) float32. ``device`` is 'auto' (CUDA when available), 'cpu' or 'cuda'; ``kwargs``
    go to :class:`Predictor` (``tile_size``, ``overlap``, ``batch_size``).

    Raises
    ------
    ModelFileError
        if the file is missing, not a nucleiseg model, or does not match its configuration.
    """
    return Predictor.from_file(path, device, **kwargs)

from .measure import measure_nuclei
from .targets import class_map, contact_border, sigmoid_targets, softmax_targets
from .weightmap import unet_weight_map

try:
    __version__ = version("nucleiseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "AnnotationError", "DSBItem", "Defect", "ImageReadError", "MatchingStats", "ModelFileError", "NucleisegError",
    "Predictor", "RLEError", "UNet", "UNetConfig", "WatershedParams", "class_map", "contact_border", "dataset_table",
    "decode_labels", "decode_rle", "dsb_score", "encode_labels", "iter_dsb2018", "load_model", "matching_table",
    "normalize_image", "unet_weight_map", "measure_nuclei",
    "probabilities_to_labels", "read_image", "read_item", "read_label_image", "read_solution_csv", "sigmoid_targets",
    "softmax_targets", "write_label_image", "write_submission",
]
