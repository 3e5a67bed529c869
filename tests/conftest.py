"""Shared fixtures: bundled samples, hand-made DSB2018 folders, and the real data when present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir

REPO = Path(__file__).resolve().parents[1]
DSB_ROOT = REPO.parent / "shared" / "dsb2018" / "stage1_train"
MONUSEG_ROOT = REPO.parent / "shared" / "monuseg2018"


@pytest.fixture(scope="session")
def dsb_root() -> Path:
    """The real DSB2018 stage1_train; tests using it skip where ../shared is absent."""
    if not DSB_ROOT.is_dir():
        pytest.skip("../shared/dsb2018/stage1_train not present")
    return DSB_ROOT


@pytest.fixture(scope="session")
def monuseg_root() -> Path:
    """MoNuSeg 2018 (train/ and test/); tests using it skip where ../shared is absent."""
    if not (MONUSEG_ROOT / "test").is_dir():
        pytest.skip("../shared/monuseg2018 not present")
    return MONUSEG_ROOT


@pytest.fixture(scope="session")
def sample_ids() -> list[str]:
    return sorted(p.stem for p in (bundled_samples_dir() / "images").glob("*.png"))


@pytest.fixture(scope="session")
def sample_labels(sample_ids) -> dict[str, np.ndarray]:
    return {i: read_label_image(bundled_samples_dir() / "labels" / f"{i}.tif") for i in sample_ids}


def disk(shape, center, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_dsb_item(root: Path, image_id: str, image: np.ndarray, masks: list[np.ndarray]) -> None:
    """Write one item in the Kaggle layout: images/<id>.png and masks/<k>.png (0/255)."""
    write_png(root / image_id / "images" / f"{image_id}.png", image)
    for k, m in enumerate(masks):
        write_png(root / image_id / "masks" / f"mask{k:03d}.png", (m > 0).astype(np.uint8) * 255)


def labels_to_masks(labels: np.ndarray) -> list[np.ndarray]:
    return [labels == k for k in np.unique(labels) if k != 0]


@pytest.fixture()
def small_dsb(tmp_path, sample_ids, sample_labels) -> Path:
    """A DSB2018-layout folder made from three bundled samples (real images, real masks)."""
    from nucleiseg.data.images import read_image

    root = tmp_path / "dsb"
    for image_id in sample_ids[:3]:
        image = read_image(bundled_samples_dir() / "images" / f"{image_id}.png")
        bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA) if image.ndim == 3 else image
        make_dsb_item(root, image_id, bgr, labels_to_masks(sample_labels[image_id]))
    return root


CROWDED = "4596961c789d"  # bundled sample: 520 x 696 fluorescence, 133 nuclei


def crowded_sample() -> Path:
    """The bundled crowded fluorescence sample's image file."""
    return next((bundled_samples_dir() / "images").glob(f"{CROWDED}*.png"))


@pytest.fixture(scope="module")
def crops_dataset(tmp_path_factory) -> Path:
    """A 'nucleiseg convert'-style folder of 12 crops of a real crowded image (not DSB2018 ids,
    so the stratified rule holds 2 of them out for validation)."""
    from nucleiseg.targets.border import class_map

    root = tmp_path_factory.mktemp("crops")
    (root / "train").mkdir()
    image = read_image(crowded_sample())
    labels = read_label_image(bundled_samples_dir() / "labels" / f"{crowded_sample().stem}.tif")
    k = 0
    for r in range(0, 520 - 96, 104):
        for c in range(0, 696 - 96, 200):
            lab = labels[r : r + 96, c : c + 96].astype(np.uint16)
            np.savez_compressed(root / "train" / f"crop{k:02d}.npz", image=image[r : r + 96, c : c + 96],
                                labels=lab, classes=class_map(lab, 2), border_width=np.int64(2))
            k += 1
    return root
