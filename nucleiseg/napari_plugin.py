"""The napari plugin (npe2 manifest ``nucleiseg/napari.yaml``; ``pip install 'nucleiseg[napari]'``).

- **Segment nuclei** (:class:`SegmentWidget`): segments the chosen Image layer with the bundled
  model or a chosen model file, with the diameter, TTA and watershed thresholds of
  ``nucleiseg predict`` as controls; runs in a worker thread (napari's ``thread_worker``) with a
  busy progress bar, then adds a Labels layer carrying the per-nucleus table
  (:func:`nucleiseg.measure.measure_nuclei`) in its ``features``, with the image layer's scale and
  translation. Same :class:`~nucleiseg.inference.predictor.Predictor` and options as ``predict``,
  so the labels equal ``predict``'s for the same image and settings.
- **Reader** (:func:`get_reader`): label TIFFs nucleiseg wrote (TIFF ``Software`` tag
  "nucleiseg"; the OME pixel size, when present, becomes the layer's scale in µm) and GeoJSON
  files (:func:`nucleiseg.geojson.read_geojson`, rasterised over the polygons' extent, with their
  measurements as features). Other TIFFs are left to napari's own reader.

napari coordinates are (row, column) with pixel centres at integers, as nucleiseg's arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .geojson import GEOJSON_SUFFIXES
from .io import LABEL_SOFTWARE

#: The widget's choice of diameter handling (see :class:`~nucleiseg.inference.predictor.PredictOptions`).
DIAMETER_MODES = ("none", "auto", "pixels")


def _features(labels: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """The per-nucleus table as a napari features dict; ``index`` is the label (napari's key)."""
    from .measure import measure_nuclei

    table = measure_nuclei(labels, image)
    return {"index": table["label"]} | {k: v for k, v in table.items() if k != "label"}


def segment_widget(napari_viewer):
    """npe2 widget command: a :class:`SegmentWidget`'s magicgui Container, the dock widget
    (the SegmentWidget rides along as its ``segmenter`` attribute)."""
    widget = SegmentWidget(napari_viewer)
    widget.container.segmenter = widget
    return widget.container


class SegmentWidget:
    """Dock widget: segment an Image layer into a Labels layer (see the module docstring).

    Built with magicgui widgets; ``self.container`` is what napari docks.

    Parameters
    ----------
    napari_viewer : the viewer (napari passes it).
    """

    def __init__(self, napari_viewer):
        from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar,
                                      PushButton, SpinBox)

        from .postprocess import WatershedParams

        self.viewer = napari_viewer
        default = WatershedParams()
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.model = FileEdit(label="model (empty: bundled)", filter="*.pt *.onnx", value="")
        self.diameter_mode = ComboBox(label="diameter", choices=DIAMETER_MODES, value="auto")
        self.diameter = FloatSpinBox(label="diameter (px)", min=1.0, max=1000.0, value=20.0, step=1.0)
        self.tta = CheckBox(label="test-time augmentation (8x slower)", value=False)
        self.use_model_values = CheckBox(label="model's watershed values", value=True)
        self.marker_threshold = FloatSpinBox(label="marker threshold", min=0.0, max=1.0, step=0.05,
                                             value=default.marker_threshold)
        self.mask_threshold = FloatSpinBox(label="mask threshold", min=0.0, max=1.0, step=0.05,
                                           value=default.mask_threshold)
        self.min_area = SpinBox(label="min area (px)", min=0, max=100000, value=default.min_area)
        self.button = PushButton(text="Segment")
        self.progress = ProgressBar(label="", min=0, max=1, value=0, visible=False)
        self.status = Label(value="")
        self.container = Container(widgets=[self.image, self.model, self.diameter_mode, self.diameter, self.tta,
                                            self.use_model_values, self.marker_threshold, self.mask_threshold,
                                            self.min_area, self.button, self.progress, self.status])
        self.button.changed.connect(self.run)
        self.model.changed.connect(self._show_model_values)
        self.use_model_values.changed.connect(self._show_model_values)
        self.viewer.layers.events.inserted.connect(lambda *_: self.image.reset_choices())
        self.viewer.layers.events.removed.connect(lambda *_: self.image.reset_choices())
        self._predictors: dict[str, object] = {}  # by model path ("" for the bundled model)
        self.worker = None
        self._show_model_values()

    def _show_model_values(self, *_) -> None:
        """Show the chosen model's tuned watershed values in the threshold controls, which are
        editable only when the model's values are not used."""
        from .errors import NucleisegError

        use = bool(self.use_model_values.value)
        for control in (self.marker_threshold, self.mask_threshold, self.min_area):
            control.enabled = not use
        if not use:
            return
        try:
            watershed = self._predictor().watershed
        except (NucleisegError, ValueError) as exc:
            self.status.value = f"failed: {exc}"
            return
        self.marker_threshold.value = watershed.marker_threshold
        self.mask_threshold.value = watershed.mask_threshold
        self.min_area.value = watershed.min_area

    def _image_layers(self, *_) -> list:
        import napari

        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _predictor(self):
        from .inference.predictor import load_model

        path = str(self.model.value) if str(self.model.value) not in ("", ".") else ""
        if path not in self._predictors:
            self._predictors[path] = load_model(path or None, "auto",
                                                   "onnx" if path.lower().endswith(".onnx") else "torch")
        return self._predictors[path]

    def _options(self, predictor):
        from dataclasses import replace

        from .inference.predictor import PredictOptions

        watershed = predictor.watershed
        if not self.use_model_values.value:
            watershed = replace(watershed, marker_threshold=float(self.marker_threshold.value),
                                mask_threshold=float(self.mask_threshold.value), min_area=int(self.min_area.value))
        mode = self.diameter_mode.value
        diameter = None if mode == "none" else "auto" if mode == "auto" else float(self.diameter.value)
        return PredictOptions(watershed=watershed, tta=bool(self.tta.value), diameter=diameter)

    @staticmethod
    def image_of(layer) -> np.ndarray:
        """The one 2-D image (gray, or RGB / RGBA) of an Image layer (the first level of a
        multiscale one).

        Raises
        ------
        ValueError
            for a stack or any other shape.
        """
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        image = np.asarray(data)
        if image.ndim != (3 if layer.rgb else 2):
            raise ValueError(f"layer {layer.name!r}: segment one 2-D image (gray or RGB), got shape {image.shape}")
        return image

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """Labels (H, W) and features of an image (:meth:`image_of`), computed in the calling
        thread (the worker thread calls this)."""
        predictor = self._predictor()
        labels = predictor.segment(image, self._options(predictor)).labels
        return labels, _features(labels, image)

    def run(self, *_) -> object:
        """Segment the chosen layer in a worker thread; returns the started worker, or None when
        there is nothing to segment (the reason in the status line). The Labels layer is added
        when it finishes; an error there goes to the status line and napari's notifications."""
        from napari.qt.threading import thread_worker

        layer = self.image.value
        if layer is None:
            self.status.value = "failed: no image layer to segment"
            return None
        try:
            image = self.image_of(layer)
        except ValueError as exc:
            self.status.value = f"failed: {exc}"
            return None
        self.button.enabled = False
        self.progress.visible = True
        self.progress.max = 0  # busy indicator
        self.status.value = f"segmenting {layer.name} ..."
        worker = thread_worker(self.segment)(image)
        worker.returned.connect(lambda result: self._add(layer, *result))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._done)
        self.worker = worker
        worker.start()
        return worker

    def _add(self, layer, labels: np.ndarray, features: dict) -> None:
        self.viewer.add_labels(labels, name=f"{layer.name} nuclei", features=features, scale=layer.scale[-2:],
                               translate=layer.translate[-2:])
        self.status.value = f"{int(labels.max(initial=0))} nuclei in {layer.name}"

    def _failed(self, exc: Exception) -> None:
        self.status.value = f"failed: {exc}"

    def _done(self) -> None:
        self.button.enabled = True
        self.progress.visible = False


def _is_nucleiseg_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            software = tif.pages[0].software or ""
    except Exception:  # not a TIFF napari's reader should take
        return False
    return software.startswith(LABEL_SOFTWARE)


def _read_label_tiff(path: Path) -> list[tuple]:
    import tifffile

    from .data.images import read_label_image

    labels = read_label_image(path)
    meta = {"name": path.stem}
    with tifffile.TiffFile(path) as tif:
        if tif.is_ome:
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
            if "PhysicalSizeX" in pixels:
                meta["scale"] = (float(pixels.get("PhysicalSizeY", pixels["PhysicalSizeX"])), float(pixels["PhysicalSizeX"]))
                meta["units"] = ("µm", "µm")
    return [(labels, meta, "labels")]


def _read_geojson(path: Path, features: list[dict]) -> list[tuple]:
    """A Labels layer over the polygons' extent, their measurements as its features."""
    from .geojson import features_extent, read_geojson

    labels, _ = read_geojson(path, features_extent(features), features)
    table: dict[str, list] = {"index": list(range(1, int(labels.max(initial=0)) + 1))}
    rows = [(f.get("properties") or {}).get("measurements") or {} for f in features]
    if rows and len(rows) == len(table["index"]) and all(isinstance(r, dict) for r in rows):
        for key in sorted({k for r in rows for k in r if k != "label"}):
            table[key] = [float(r.get(key, np.nan)) for r in rows]
    return [(labels, {"name": path.stem, "features": table}, "labels")]


def get_reader(path: str | list[str]) -> Callable | None:
    """napari reader hook: a reader for one nucleiseg label TIFF or GeoJSON file, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() in GEOJSON_SUFFIXES and p.is_file():
        from .errors import AnnotationError
        from .geojson import read_features

        try:
            features = read_features(p)
        except AnnotationError:
            return None  # some other JSON: not ours to open
        return lambda _: _read_geojson(p, features)
    if p.suffix.lower() in (".tif", ".tiff") and p.is_file() and _is_nucleiseg_tiff(p):
        return lambda _: _read_label_tiff(p)
    return None
