"""nucleiseg: find every cell nucleus in a microscopy image and give each its own label.

The pipeline, one subpackage or module each::

    data -> targets -> model -> training / inference -> postprocess -> metrics, evaluation
    (and cli on top; io, transforms, labels, progress and errors are shared by all)

Everything named here loads on first use (``lazy_loader``, as scikit-image does), so
``import nucleiseg`` does not import PyTorch, Dask or matplotlib.

Example
-------
>>> import nucleiseg
>>> model = nucleiseg.load_model()          # the bundled model
>>> labels = model.predict(nucleiseg.read_image("cells.png"))   # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "data.aperio": ["read_aperio_xml"],
    "data.dsb2018": ["DSBItem", "iter_dsb2018", "read_item"],
    "data.items": ["Defect", "LabeledItem"],
    "data.layouts": ["open_collection"],
    "data.images": ["read_image", "read_label_image"],
    "data.rle": ["decode_labels", "decode_rle", "encode_labels", "read_solution_csv", "write_submission"],
    "export": ["export_onnx"],
    "bioimageio": ["export_bioimageio"],
    "geojson": ["label_features", "read_geojson", "write_geojson"],
    "errors": ["AnnotationError", "ImageReadError", "MissingDependencyError", "ModelFileError", "NucleisegError",
               "RLEError"],
    "inference.predictor": ["PredictOptions", "Predictor", "load_model"],
    "io": ["write_label_image"],
    "measure": ["measure_nuclei"],
    "inference.classical": ["classical_labels"],
    "metrics": ["MatchingStats", "aggregated_jaccard_index", "dataset_table", "dsb_score", "image_metrics",
                "matching_table"],
    "model.config": ["ModelConfig", "UNetConfig"],
    "model.unet": ["UNet"],
    "postprocess": ["WatershedParams", "probabilities_to_labels"],
    "targets.border": ["class_map", "contact_border", "sigmoid_targets", "softmax_targets"],
    "targets.weightmap": ["unet_weight_map"],
    "training.config": ["TrainConfig"],
    "training.loop": ["train"],
    "transforms": ["normalize_image"],
})

try:
    __version__ = version("nucleiseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"
