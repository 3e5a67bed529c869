"""``nucleiseg bench predict``: inference time per image size, end to end and split into network
(normalisation, U-Net, softmax) and watershed, with and without test-time augmentation; and with
the default options (``predict``'s: the nucleus diameter estimated and the image rescaled)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import read_image
from ..data.sources import iter_image_paths
from ..postprocess import probabilities_to_labels
from .common import best_of, device_name, machine

if TYPE_CHECKING:
    from ..inference.predictor import Predictor


def one_image_per_size(inputs: list[Path]) -> dict[str, np.ndarray]:
    """{ImageId: image} of the first image (by ImageId) of each distinct (H, W) among ``inputs``
    (files, folders, DSB2018 folders), smallest first."""
    by_size: dict[tuple[int, int], tuple[str, np.ndarray]] = {}
    for image_id, path in sorted(iter_image_paths(inputs)):
        image = read_image(path)
        by_size.setdefault(image.shape[:2], (image_id, image))
    return dict(by_size[size] for size in sorted(by_size, key=lambda hw: (hw[0] * hw[1], hw)))


def bench_predict(predictor: "Predictor", images: dict[str, np.ndarray], repeat: int = 3, tta: tuple[bool, ...] = (False, True),
                  threads: int | None = None, others: tuple["Predictor", ...] = ()) -> dict:
    """Per image size: end-to-end ms per image (best of ``repeat``) at the original scale, split
    into network (normalisation, U-Net, softmax) and watershed, and megapixels per second; without
    TTA also ``default_ms``, the whole of :meth:`Predictor.segment` with the default options (the
    diameter estimated, the image rescaled) and the ``scale`` it chose; ``others`` (e.g.
    the ONNX backend of the same model) are timed on the same images, one after the other per
    image, and their labels compared with ``predictor``'s (``same_labels``)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    rows = []
    for name, image in images.items():
        reference = None
        for p in (predictor, *others):
            p.predict(image)  # warm-up
            for use_tta in tta:
                net_s, probs = best_of(lambda: p.predict_probabilities(image, tta=use_tta), repeat)
                ws_s, labels = best_of(lambda: probabilities_to_labels(probs, p.watershed), repeat)
                if p is predictor and not use_tta:
                    reference = labels
                mp = image.shape[0] * image.shape[1] / 1e6
                default_s, seg = best_of(lambda: p.segment(image), repeat) if not use_tta else (None, None)
                rows.append({"image": name, "shape": list(image.shape[:2]), "backend": p.backend, "tta": use_tta,
                             "network_ms": net_s * 1e3, "watershed_ms": ws_s * 1e3, "total_ms": (net_s + ws_s) * 1e3,
                             "default_ms": None if default_s is None else default_s * 1e3,
                             "scale": None if seg is None else seg.scale,
                             "megapixels_per_s": mp / (net_s + ws_s), "nuclei": int(labels.max(initial=0)),
                             "same_labels": None if use_tta or reference is None
                             else bool(np.array_equal(labels, reference))})
    return {"machine": machine(), "device": device_name(predictor.device), "torch_threads": torch.get_num_threads(),
            "precision": "float32" if predictor.autocast is None else "bf16 autocast",
            "channels_last": predictor.channels_last, "compiled": predictor.compiled,
            "rows": rows}


def format_predict(result: dict) -> str:
    lines = [f"machine: {result['machine']}; device {result['device']}, torch threads {result['torch_threads']}, "
             f"{result.get('precision', 'float32')}, "
             f"channels-last {'on' if result.get('channels_last') else 'off'}, "
             f"torch.compile {'on' if result.get('compiled') else 'off'}",
             f"{'image':<14}{'H x W':>11}{'backend':>8}{'TTA':>5}{'network ms':>12}{'watershed ms':>14}"
             f"{'total ms':>10}{'MPx/s':>8}{'labels':>8}{'default ms':>12}{'scale':>7}"]
    for r in result["rows"]:
        same = {None: "", True: "same", False: "differ"}[r.get("same_labels")]
        lines.append(f"{r['image'][:12]:<14}{r['shape'][0]:>5}x{r['shape'][1]:<5}{r.get('backend', 'torch'):>8}"
                     f"{'yes' if r['tta'] else 'no':>5}{r['network_ms']:>12.0f}{r['watershed_ms']:>14.0f}"
                     f"{r['total_ms']:>10.0f}{r['megapixels_per_s']:>8.2f}{same:>8}"
                     + (f"{r['default_ms']:>12.0f}{r['scale']:>7.2f}" if r.get("default_ms") is not None else ""))
    lines.append("total ms: at the original scale (--diameter none); default ms: predict's default options "
                 "(diameter estimated, image rescaled by 'scale'), estimate included")
    return "\n".join(lines)
