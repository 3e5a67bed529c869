"""bioimage.io model packages (spec format 0.5, through ``bioimageio.spec``), for deepImageJ,
ilastik, QuPath and the bioimage.io tools (``nucleiseg export MODEL --bioimageio out.zip``).

What the package holds (``rdf.yaml`` plus its files, written by
``bioimageio.spec.save_bioimageio_package``):

- **weights** of one network, :class:`~nucleiseg.model.unet_core.SoftmaxUNet` (softmax inside):
  ``pytorch_state_dict`` (float32 state dict; architecture ``unet_core.py``, which imports only
  PyTorch), ``torchscript`` (``torch.jit.trace``) and ``onnx`` (:func:`nucleiseg.export.network_onnx`);
- **input** ``raw``: (batch, channel, y, x) float32, C channels as the model's input
  (:func:`nucleiseg.transforms.network_input`), y and x multiples of ``2**depth``, at least
  ``2**depth``. Pre-processing in the spec's terms: ``scale_range`` per sample and channel with
  the model's percentiles (1 and 99.8 by default) and ``clip`` to [0, 1], the percentile stretch
  nucleiseg does. What the spec cannot say is in the package's documentation (and
  :data:`INPUT_NOTES`): channel 0 is the gray image (mean of the colour channels), to be inverted
  (max - value) by the user for light-background images (brightfield, H&E); channel 1 of
  gray + haematoxylin models is the gray image again, or for colour (H&E) images the haematoxylin
  channel of the colour deconvolution (``skimage.color.rgb2hed``);
- **output** ``probabilities``: (batch, channel, y, x) float32, channels (mask - border, border,
  background), the y and x of the input. The marker-controlled watershed that turns them into
  labels (:func:`nucleiseg.postprocess.probabilities_to_labels`, with the model's tuned values,
  written into the documentation) is not a spec operation and stays with nucleiseg;
- **test tensors**: a bundled CC0 DSB2018 sample (its gray image twice, or its gray image and a
  copy for one-channel models) and nucleiseg's own output for it;
- authors, citations (U-Net, DSB2018, MoNuSeg where trained on it), training data and licence:
  the most restrictive licence among the training collections (CC BY-NC-SA 4.0 with MoNuSeg), or
  MIT, nucleiseg's own, when all are CC0.

Needs the ``bioimageio`` extra (``pip install 'nucleiseg[bioimageio]'``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, NucleisegError
from .io import atomic_path

#: What the spec's pre-processing cannot express (written into the package's documentation).
INPUT_NOTES = (
    "Channel 0 is the gray image (the mean of the colour channels). nucleiseg inverts it after the "
    "percentile stretch when the stretched image's median is above 0.5 (light background: brightfield, H&E), "
    "so nuclei are bright on dark; give such images inverted (maximum - value). "
    "Models with two input channels (gray + haematoxylin) take, as channel 1, the gray image again for "
    "fluorescence and other one-colour images, or for colour (H&E) images the haematoxylin channel of "
    "skimage.color.rgb2hed (Ruifrok & Johnston 2001) of the RGB image scaled to [0, 1]."
)

#: SPDX identifiers of the training-collection licences nucleiseg knows, least to most restrictive.
LICENCES = {"CC0 1.0": "CC0-1.0", "CC BY 4.0": "CC-BY-4.0", "CC BY-NC-SA 4.0": "CC-BY-NC-SA-4.0"}
#: nucleiseg's own licence, for weights trained on CC0 data only.
PROJECT_LICENCE = "MIT"

_CITATIONS = (
    ("U-Net: Ronneberger, Fischer & Brox, MICCAI 2015", "10.1007/978-3-319-24574-4_28", None),
    ("DSB2018 training data: Caicedo et al., Nature Methods 16, 2019", "10.1038/s41592-019-0612-7", "DSB2018"),
    ("MoNuSeg training data: Kumar et al., IEEE TMI 36(7), 2017", "10.1109/TMI.2017.2677499", "MoNuSeg"),
)


def weights_licence(trained_on: list[dict]) -> str:
    """SPDX identifier for weights trained on collections with these provenance records: the most
    restrictive of :data:`LICENCES` among them, or :data:`PROJECT_LICENCE` when all are CC0 or
    none is recorded.

    Raises
    ------
    NucleisegError
        for a collection of a licence nucleiseg does not know (the user must decide).
    """
    order = list(LICENCES)
    ranks = []
    for record in trained_on:
        if record.get("licence") not in LICENCES:
            raise NucleisegError(f"training collection {record.get('name')!r} has licence {record.get('licence')!r}; "
                                 "nucleiseg cannot tell what the weights' licence is")
        ranks.append(order.index(record["licence"]))
    if not ranks or max(ranks) == 0:
        return PROJECT_LICENCE
    return LICENCES[order[max(ranks)]]


def _require():
    try:
        import bioimageio.spec  # noqa: F401
        import bioimageio.spec.model.v0_5  # noqa: F401
    except ImportError:
        raise MissingDependencyError("bioimage.io export needs bioimageio.spec: pip install 'nucleiseg[bioimageio]'") from None


def test_input(channels: int, image: np.ndarray) -> np.ndarray:
    """The package's test input for a bundled one-colour sample: (1, channels, H, W) float32, its
    gray image in every channel (see the module docstring)."""
    from .transforms import to_gray_float

    gray = to_gray_float(image)
    return np.ascontiguousarray(np.broadcast_to(gray, (1, channels) + gray.shape), dtype=np.float32)


def _documentation(config, name: str) -> str:
    ws = config.watershed
    lines = [
        f"# {name}", "",
        "Nucleus instance segmentation with a U-Net and a marker-controlled watershed, exported by nucleiseg.", "",
        "## Input", "", f"`raw`: (batch, channel, y, x), {config.unet.in_channels} channel(s), y and x multiples of "
        f"{2 ** config.unet.depth}. Pre-processing in this package: per-channel percentile stretch "
        f"({config.normalization.p_low}, {config.normalization.p_high}) to [0, 1], clipped.", "", INPUT_NOTES, "",
        "## Output", "", "`probabilities`: (batch, 3, y, x) softmax probabilities of (nucleus minus its contact "
        "border, contact border, background).", "",
        "## Post-processing (not in this package)", "",
        "Labels come from nucleiseg's marker-controlled watershed (nucleiseg.postprocess.probabilities_to_labels): "
        f"markers = connected components of (mask - border) probability > {ws.marker_threshold}, flooded over the "
        f"nucleus mask (1 - background probability) > {ws.mask_threshold}, nuclei under {ws.min_area} pixels "
        "dropped. `nucleiseg predict` runs all of it.", "",
        "## Training data and licence", "",
    ]
    lines += [f"- {r.get('name')} ({r.get('licence')}): {r.get('source', '')}" for r in config.trained_on] or [
        "- not recorded"]
    lines += ["", "## Validation", ""]
    if config.validation is not None:
        v = config.validation
        lines += [f"DSB2018 score (mean over IoU thresholds 0.50..0.95 of TP / (TP + FP + FN)) on the held-out "
                  f"validation images of the training collections ({len(v.ids) or 'not recorded'} images): "
                  f"{v.score:.3f}; per modality: " + ", ".join(f"{k} {s:.3f}" for k, s in v.per_modality.items())
                  + ". These come from the same sources as the training images; measure on your own annotated "
                  "images (`nucleiseg evaluate`, `nucleiseg score`) before trusting it on another source."]
    else:
        lines += ["Not recorded in the model file."]
    return "\n".join(lines) + "\n"


def _write_files(model_file, folder: Path, name: str) -> None:
    """Write the weights, test and sample tensors, cover, network source and documentation of a
    read model file (:class:`~nucleiseg.model.file.ModelFile`) into ``folder``."""
    import warnings

    import tifffile
    import torch

    from .data.images import read_image
    from .data.sources import bundled_samples_dir
    from .export import network_onnx, softmax_network
    from .inference.predictor import Predictor
    from .io import write_png
    from .model import unet_core
    from .overlay import colour_overlay

    config = model_file.config
    net = softmax_network(*model_file)
    channels, multiple = config.unet.in_channels, 2 ** config.unet.depth
    # test tensors: a bundled one-colour sample (CC0) and nucleiseg's own probabilities for it
    image = read_image(sorted((bundled_samples_dir() / "images").iterdir())[1])
    image = image[: image.shape[0] // multiple * multiple, : image.shape[1] // multiple * multiple]
    predictor = Predictor(*model_file, torch.device("cpu"), precision="fp32")  # the reference output: float32
    probabilities = predictor.probabilities_of_normalized(predictor.normalize(image))[None].astype(np.float32)
    raw = test_input(channels, image)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", probabilities)
    tifffile.imwrite(folder / "sample_input.tif", raw[0], photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", probabilities[0], photometric="minisblack")
    write_png(folder / "cover.png", colour_overlay(image, predictor.predict(image)))
    torch.save(net.state_dict(), folder / "weights.pt")
    with torch.no_grad(), warnings.catch_warnings():
        # deprecated in PyTorch 2.13, but TorchScript is what deepImageJ and bioimage.io's torchscript weights run
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(net, torch.zeros(1, channels, multiple * 4, multiple * 4)).save(
            str(folder / "weights_torchscript.pt"))
    (folder / "weights.onnx").write_bytes(network_onnx(net, config))
    (folder / "unet_core.py").write_text(Path(unet_core.__file__).read_text())
    (folder / "README.md").write_text(_documentation(config, name))


def _tensors(spec, folder: Path, config) -> tuple[list, list]:
    """The input and output tensor descriptions (see the module docstring)."""
    channels, multiple = config.unet.in_channels, 2 ** config.unet.depth
    y, x, raw = spec.AxisId("y"), spec.AxisId("x"), spec.TensorId("raw")
    axes_in = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(f"c{i}") for i in range(channels)]),
               spec.SpaceInputAxis(id=y, size=spec.ParameterizedSize(min=multiple, step=multiple)),
               spec.SpaceInputAxis(id=x, size=spec.ParameterizedSize(min=multiple, step=multiple))]
    norm = config.normalization
    preprocessing = [
        spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
        spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=[y, x], min_percentile=norm.p_low,
                                                          max_percentile=norm.p_high)),
        spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
    ]
    inputs = [spec.InputTensorDescr(id=raw, axes=axes_in, test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
                                    sample_tensor=spec.FileDescr(source=folder / "sample_input.tif"),
                                    data=spec.IntervalOrRatioDataDescr(type="float32"), preprocessing=preprocessing,
                                    description="gray image (and nuclear-stain channel); see the documentation")]
    axes_out = [spec.BatchAxis(),
                spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in ("nucleus", "border", "background")]),
                spec.SpaceOutputAxis(id=y, size=spec.SizeReference(tensor_id=raw, axis_id=y)),
                spec.SpaceOutputAxis(id=x, size=spec.SizeReference(tensor_id=raw, axis_id=x))]
    outputs = [spec.OutputTensorDescr(id=spec.TensorId("probabilities"), axes=axes_out,
                                      test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
                                      sample_tensor=spec.FileDescr(source=folder / "sample_output.tif"),
                                      data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                                      description="softmax probabilities of (mask - border, border, background)")]
    return inputs, outputs


def _weights(spec, folder: Path, config):
    """The three weight formats, the state dict with its stand-alone architecture file."""
    import torch

    from .export import ONNX_OPSET

    pytorch_version = spec.Version(torch.__version__.split("+")[0])
    architecture = spec.ArchitectureFromFileDescr(
        source=folder / "unet_core.py", callable=spec.Identifier("SoftmaxUNet"),
        kwargs={"in_channels": config.unet.in_channels, "out_channels": config.unet.out_channels,
                "features": list(config.unet.features), "block": config.unet.block})
    return spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(source=folder / "weights.pt", architecture=architecture,
                                                             pytorch_version=pytorch_version),
        torchscript=spec.TorchscriptWeightsDescr(source=folder / "weights_torchscript.pt",
                                                 pytorch_version=pytorch_version, parent="pytorch_state_dict"),
        onnx=spec.OnnxWeightsDescr(source=folder / "weights.onnx", opset_version=ONNX_OPSET,
                                   parent="pytorch_state_dict"))


def build_description(model: str | os.PathLike | None, folder: Path, name: str | None = None):
    """Write the package's files into ``folder`` and return its ``bioimageio.spec`` ModelDescr.

    Raises
    ------
    ModelFileError, MissingDependencyError, NucleisegError
        for an unreadable model file, a missing extra, or an unknown training licence.
    """
    _require()
    from bioimageio.spec.model import v0_5 as spec

    from . import __version__
    from .model.file import read_model_file

    model_file = read_model_file(model, "cpu")
    config = model_file.config
    name = name or f"nucleiseg U-Net ({config.normalization.channels})"
    licence = weights_licence(config.trained_on)  # before any work: an unknown licence stops here
    _write_files(model_file, folder, name)
    inputs, outputs = _tensors(spec, folder, config)
    trained = " ".join(r.get("name", "") for r in config.trained_on)
    cite = [spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi, needs in _CITATIONS
            if needs is None or needs in trained]
    version = __version__.split("+")[0]
    return spec.ModelDescr(
        name=name,
        description="U-Net for nucleus instance segmentation (fluorescence, brightfield, H&E): probabilities of "
                    "nucleus, contact border and background for nucleiseg's marker-controlled watershed.",
        authors=[spec.Author(name="nucleiseg developers")],
        cite=cite,
        license=spec.LicenseId(licence),
        documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")],
        tags=["nuclei", "instance-segmentation", "unet", "2d", "fluorescence-light-microscopy",
              "bright-field-microscopy", "histology", "pytorch", "nucleiseg"],
        version=spec.Version(version) if version[:1].isdigit() else None,
        inputs=inputs, outputs=outputs, weights=_weights(spec, folder, config),
    )


def export_bioimageio(model: str | os.PathLike | None, out: str | os.PathLike, name: str | None = None) -> Path:
    """Write a bioimage.io model package (zip) of a model file (None: the bundled model), atomically.

    Raises
    ------
    ModelFileError, MissingDependencyError, NucleisegError
        as :func:`build_description`, or when ``bioimageio.spec`` finds the description invalid.
    """
    _require()
    from bioimageio.spec import save_bioimageio_package

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="nucleiseg-bioimageio-") as tmp:
        try:
            descr = build_description(model, Path(tmp), name)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise NucleisegError(f"the bioimage.io description did not validate: {exc}") from None
        with atomic_path(out) as part:
            save_bioimageio_package(descr, output_path=part)
    return out


def test_package(path: str | os.PathLike):
    """``bioimageio.core.test_model`` on a package: its validation summary (``.status`` is
    "passed" when the description is valid and every weight format reproduces the test output).

    Raises
    ------
    MissingDependencyError
        without bioimageio.core.
    """
    try:
        from bioimageio.core import test_model
    except ImportError:
        raise MissingDependencyError("testing bioimage.io packages needs bioimageio.core: "
                                     "pip install 'nucleiseg[bioimageio]'") from None
    return test_model(str(path))
