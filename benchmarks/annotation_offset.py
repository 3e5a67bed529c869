"""Where MoNuSeg's annotation masks sit relative to the nuclei they outline.

For each image, the binary annotation mask is shifted by whole pixels (-3..3 in each axis) and
correlated with the haematoxylin channel of the colour deconvolution (``skimage.color.rgb2hed``;
Ruifrok & Johnston 2001); the best shift is refined to sub-pixel by a parabola through its
neighbours. A mask that must move down by d px to line up with the stain sits d px above the
nuclei. Printed per set as the mean and spread over images, for the training masks (label
images as distributed), the test truth as nucleiseg reads the Aperio XML (the organisers'
``poly2mask`` rule, :mod:`nucleiseg.data.aperio`), and the reading nucleiseg used before
(pixel centres on the raw XML coordinates, plus every outline pixel) for comparison, and with
``--predicted`` a model's label images of the test images (``nucleiseg predict`` output).

    python benchmarks/annotation_offset.py MONUSEG_DIR [--predicted PREDICT_OUT]

MONUSEG_DIR: a folder with ``train/images`` + ``train/masks`` and ``test/*.tif`` + ``*.xml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RADIUS = 3


def mask_offset(stain: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(down, right) in pixels: where ``mask`` (H, W) bool sits relative to ``stain`` (H, W) float."""
    stain = (stain - stain.mean()) / stain.std()
    centred = mask.astype(np.float64) - mask.mean()
    inner = (slice(RADIUS, -RADIUS),) * 2
    size = 2 * RADIUS + 1
    score = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            moved = np.roll(centred, (i - RADIUS, j - RADIUS), axis=(0, 1))
            score[i, j] = (moved[inner] * stain[inner]).mean()
    i, j = np.unravel_index(score.argmax(), score.shape)

    def vertex(a: float, b: float, c: float) -> float:
        curvature = a - 2 * b + c
        return 0.0 if curvature == 0 else 0.5 * (a - c) / curvature

    di = vertex(score[i - 1, j], score[i, j], score[i + 1, j]) if 0 < i < size - 1 else 0.0
    dj = vertex(score[i, j - 1], score[i, j], score[i, j + 1]) if 0 < j < size - 1 else 0.0
    # the mask must move by (i - RADIUS + di, ...) to meet the stain: it sits that far the other way
    return -(i - RADIUS + di), -(j - RADIUS + dj)


def earlier_reading(xml: Path, shape: tuple[int, int]) -> np.ndarray:
    """The union of the polygons read with pixel centres on the raw coordinates, outline included."""
    from skimage.draw import polygon, polygon_perimeter

    from nucleiseg.data.aperio import VERTEX_ORIGIN, read_polygons

    mask = np.zeros(shape, bool)
    for _, corners in read_polygons(xml):
        raw = corners + VERTEX_ORIGIN
        mask[polygon(raw[:, 0], raw[:, 1], shape)] = True
        mask[polygon_perimeter(np.round(raw[:, 0]), np.round(raw[:, 1]), shape)] = True
    return mask


def main() -> None:
    from skimage.color import rgb2hed

    from nucleiseg.data.aperio import read_aperio_xml
    from nucleiseg.data.images import read_image, read_label_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("monuseg", type=Path)
    parser.add_argument("--predicted", type=Path, help="folder of predicted <name>.tif label images of the test set")
    args = parser.parse_args()
    root = args.monuseg
    rows: dict[str, list[tuple[float, float]]] = {"training masks": [], "test, poly2mask rule (nucleiseg)": [],
                                                  "test, earlier reading": [], "test, predicted": []}
    for image_path in sorted((root / "train" / "images").iterdir()):
        haematoxylin = rgb2hed(read_image(image_path)[..., :3])[..., 0]
        mask = read_label_image(root / "train" / "masks" / f"{image_path.stem}.tif") > 0
        rows["training masks"].append(mask_offset(haematoxylin, mask))
    for image_path in sorted((root / "test").glob("*.tif")):
        image = read_image(image_path)[..., :3]
        haematoxylin = rgb2hed(image)[..., 0]
        xml = image_path.with_suffix(".xml")
        labels, _ = read_aperio_xml(xml, image.shape[:2])
        rows["test, poly2mask rule (nucleiseg)"].append(mask_offset(haematoxylin, labels > 0))
        rows["test, earlier reading"].append(mask_offset(haematoxylin, earlier_reading(xml, image.shape[:2])))
        if args.predicted:
            predicted = read_label_image(args.predicted / f"{image_path.stem}.tif")
            rows["test, predicted"].append(mask_offset(haematoxylin, predicted > 0))
    print("| masks | images | down, px (sd) | right, px (sd) |\n|---|---|---|---|")
    for name, offsets in rows.items():
        if not offsets:
            continue
        a = np.array(offsets)
        print(f"| {name} | {len(a)} | {a[:, 0].mean():+.2f} ({a[:, 0].std():.2f}) | "
              f"{a[:, 1].mean():+.2f} ({a[:, 1].std():.2f}) |")


if __name__ == "__main__":
    main()
