"""Label images as OME-TIFF with the physical pixel size (read back by tifffile), and the
multi-resolution pyramid of very large outputs, including block-wise ones."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.inference.batch import predict_files
from nucleiseg.inference.predictor import PredictOptions, load_model
from nucleiseg.io import PYRAMID_MIN_SIDE, pyramid_levels, write_label_image


def _physical_size(path) -> tuple[float, float, str]:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        return float(pixels["PhysicalSizeX"]), float(pixels["PhysicalSizeY"]), pixels["PhysicalSizeXUnit"]


def test_pixel_size_is_written_and_read_back(tmp_path):
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_label_image(tmp_path / "a.tif", labels, pixel_size=0.325)
    assert _physical_size(tmp_path / "a.tif") == (0.325, 0.325, "µm")
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        x_res = tif.pages[0].tags["XResolution"].value
        assert tif.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
        assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.325)  # pixels per cm, for ImageJ's reader
        assert tif.pages[0].software == "nucleiseg"
    np.testing.assert_array_equal(read_label_image(tmp_path / "a.tif"), labels)
    write_label_image(tmp_path / "b.tif", labels)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        assert not tif.is_ome  # no pixel size given: a plain TIFF, as before
    with pytest.raises(ValueError, match="pixel size must be > 0"):
        write_label_image(tmp_path / "c.tif", labels, pixel_size=0.0)


def test_pyramid_above_8192_pixels(tmp_path):
    assert pyramid_levels((PYRAMID_MIN_SIDE, 10)) == 0
    assert pyramid_levels((PYRAMID_MIN_SIDE + 1, 10)) == 4  # 8193 -> 4097 -> 2049 -> 1025 -> 513
    labels = np.zeros((PYRAMID_MIN_SIDE + 8, 40), np.uint32)
    labels[100:300, 10:30] = 70000
    labels[5000:5010, 0:40] = 3
    write_label_image(tmp_path / "big.tif", labels, pixel_size=0.5)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(8200, 40), (4100, 20), (2050, 10), (1025, 5), (513, 3)]
        np.testing.assert_array_equal(levels[1].asarray(), labels[::2, ::2])  # reduced levels keep label values
        np.testing.assert_array_equal(levels[4].asarray(), labels[::16, ::16])
    assert _physical_size(tmp_path / "big.tif")[0] == 0.5
    mapped = tifffile.memmap(tmp_path / "big.tif", mode="r")  # level 0 stays memory-mappable
    np.testing.assert_array_equal(mapped, labels)


def test_blockwise_output_as_ome_tiff_equals_the_plain_one(tmp_path):
    """A 520 x 696 sample predicted block by block (block size 320), with and without a pixel
    size, and with the watershed in 2 worker processes: the same labels, the OME one carrying
    the size."""
    path = sorted((bundled_samples_dir() / "images").iterdir())[5]
    assert read_image(path).shape[:2] == (520, 696)
    model = load_model(device="cpu")
    [plain] = predict_files([path], tmp_path / "plain", model, PredictOptions(block_size=320, overlay=False))
    [ome] = predict_files([path], tmp_path / "ome", model, PredictOptions(block_size=320, overlay=False,
                                                                        pixel_size=0.25, measure=True))
    [pool] = predict_files([path], tmp_path / "pool", model, PredictOptions(block_size=320, overlay=False,
                                                                          watershed_processes=2))
    assert plain.status == ome.status == pool.status == "done" and plain.n_nuclei == ome.n_nuclei == pool.n_nuclei > 0
    for other in ("ome", "pool"):
        np.testing.assert_array_equal(read_label_image(tmp_path / other / f"{path.stem}.tif"),
                                      read_label_image(tmp_path / "plain" / f"{path.stem}.tif"))
    assert _physical_size(tmp_path / "ome" / f"{path.stem}.tif")[0] == 0.25
    assert sorted(p.name for p in (tmp_path / "ome").iterdir()) == sorted(
        [f"{path.stem}.tif", f"{path.stem}_nuclei.csv", "summary.csv"])  # no temporary left behind


def _mapped_file_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))
    except (OSError, StopIteration):
        return None


def test_a_memory_mapped_label_map_is_read_in_bands(tmp_path):
    """strided_rows gives array[start:stop:step, ::step], and writing the pyramid of a 300 MB
    memory-mapped label map leaves its pages unmapped: a strided read spanning the whole map would
    map every row it spans (the kernel's fault-around), as the 1.07 gigapixel slide's pyramid and
    overlay did (2.4 GB resident for a moment)."""
    from nucleiseg.io import release_pages, strided_rows, write_label_pyramid

    rng = np.random.default_rng(0)
    small = rng.integers(0, 1000, (700, 301)).astype(np.uint32)
    for step, start, stop in ((1, 0, 700), (2, 5, 699), (3, 256, 600), (16, 0, 700), (300, 0, 700)):
        np.testing.assert_array_equal(strided_rows(small, start, stop, step), small[start:stop:step, ::step])
    side = PYRAMID_MIN_SIDE + 512  # a pyramid of more than one level
    labels = np.memmap(tmp_path / "labels.u32", np.uint32, "w+", shape=(side, side))
    for r in range(0, side, 1024):
        labels[r : r + 1024] = np.arange(r, min(r + 1024, side), dtype=np.uint32)[:, None] // 7
        release_pages(labels)
    before = _mapped_file_kb()
    write_label_pyramid(tmp_path / "labels.ome.tif", labels)
    after = _mapped_file_kb()
    with tifffile.TiffFile(tmp_path / "labels.ome.tif") as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray()[::1000], labels[::1000])
        levels = tif.series[0].levels
        step = 2 ** (len(levels) - 1)
        assert step >= 2
        np.testing.assert_array_equal(levels[-1].asarray(), labels[::step, ::step])
    if before is not None:
        assert after - before < 64 * 1024  # kB: at most a band's worth, not the map's 300 MB
