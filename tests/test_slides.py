"""Whole-slide images: lazy reading, pixel size from the metadata, tissue mask, and prediction
of a slide block by block into labels, GeoJSON and a table (issue 24).

The slides are built here with :func:`nucleiseg.data.slides.write_slide` (pyramidal, tiled, the
metadata of SVS, OME-TIFF or plain TIFF) from the bundled H&E samples, so the tests need no data.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nucleiseg.data.images import read_image, read_label_image
from nucleiseg.data.slides import is_slide, open_slide, read_pixel_size, tissue_mask, write_slide
from nucleiseg.data.sources import bundled_samples_dir
from nucleiseg.errors import ImageReadError
from nucleiseg.geojson import read_geojson
from nucleiseg.inference.batch import predict_files
from nucleiseg.inference.blockwise import DEFAULT_HALO, predict_blockwise
from nucleiseg.inference.predictor import PredictOptions, Predictor
from nucleiseg.inference.slide import read_thumbnail
from nucleiseg.measure import measure_nuclei
from nucleiseg.transforms import input_params

GLASS = 238  # gray, unsaturated: what a scanner sees where there is no tissue


def _he_tiles() -> list[np.ndarray]:
    """The two bundled H&E samples (256 x 320 RGB)."""
    folder = bundled_samples_dir() / "images"
    return [read_image(next(folder.glob(f"{i}*.png")))[:, :, :3] for i in ("00ae65c1c663", "3bfa8b3b01fd")]


def mosaic(rows: int = 3, cols: int = 3, glass_cols: int = 0) -> np.ndarray:
    """(rows * 256, cols * 320 + glass_cols, 3) uint8: the two bundled H&E samples tiled with
    alternating flips (nuclei run across tile seams), then ``glass_cols`` columns of glass."""
    tiles = _he_tiles()
    grid = [[tiles[(i + j) % 2][:: (-1) ** i, :: (-1) ** j] for j in range(cols)] for i in range(rows)]
    image = np.concatenate([np.concatenate(r, axis=1) for r in grid], axis=0)
    glass = np.full((image.shape[0], glass_cols, 3), GLASS, np.uint8)
    return np.ascontiguousarray(np.concatenate([image, glass], axis=1))


# --- reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata", ["ome", "svs", "tiff"])
def test_pyramid_levels_and_pixel_size_from_each_kind_of_metadata(tmp_path, metadata):
    image = mosaic(2, 2)  # 512 x 640
    path = tmp_path / ("slide.svs" if metadata == "svs" else "slide.tif")
    write_slide(path, image, pixel_size=0.2527, metadata=metadata, smallest_side=200, compression="zlib")
    assert is_slide(path)
    with open_slide(path) as slide:
        info = slide.info
        assert info.levels == ((512, 640), (256, 320), (128, 160))
        assert info.downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert info.channels == 3
        assert info.pixel_size == pytest.approx(0.2527, rel=1e-6)
        np.testing.assert_array_equal(slide.level(0)[100:300, 37:501], image[100:300, 37:501])  # lossless
        assert slide.level(2).shape == (128, 160, 3)
        assert slide.thumbnail_level(256 * 320) == 1


def test_pixel_size_units_and_absent_metadata(tmp_path):
    data = np.zeros((64, 64), np.uint8)
    cases = {
        "ome_nm.tif": ({"metadata": {"axes": "YX", "PhysicalSizeX": 325.0, "PhysicalSizeXUnit": "nm"}, "ome": True}, 0.325),
        "ome_default_unit.tif": ({"metadata": {"axes": "YX", "PhysicalSizeX": 0.5}, "ome": True}, 0.5),
        "inch.tif": ({"resolution": (25400 / 0.5, 25400 / 0.5), "resolutionunit": "INCH"}, 0.5),
        "cm.tif": ({"resolution": (1e4 / 0.2, 1e4 / 0.2), "resolutionunit": "CENTIMETER"}, 0.2),
        "screen_dpi.tif": ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),
        "none.tif": ({}, None),
    }
    for name, (kwargs, expected) in cases.items():
        ome = kwargs.pop("ome", False)
        with tifffile.TiffWriter(tmp_path / name, ome=ome) as tif:
            tif.write(data, **kwargs)
        with tifffile.TiffFile(tmp_path / name) as tif:
            got = read_pixel_size(tif)
        assert got == (None if expected is None else pytest.approx(expected)), name


def test_reading_a_region_decodes_only_its_tiles(tmp_path):
    """A 256 x 256 region of a 4096 x 4096 RGB slide (48 MB decoded) costs a few tiles' memory."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (256, 256, 3), np.uint8)

    class Lazy:  # a big image built tile by tile, never whole
        shape, dtype = (4096, 4096, 3), np.dtype(np.uint8)

        def __getitem__(self, key):
            rows, cols = key
            r = np.arange(rows.start, rows.stop) % 256
            c = np.arange(cols.start, cols.stop) % 256
            return tile[r][:, c]

    path = tmp_path / "big.tif"
    write_slide(path, Lazy(), 0.25, "ome", compression="zlib")
    with open_slide(path) as slide:
        level = slide.level(0)
        tracemalloc.start()
        region = level[1000:1256, 2000:2256]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    np.testing.assert_array_equal(region, tile[np.arange(1000, 1256) % 256][:, np.arange(2000, 2256) % 256])
    level_bytes = 4096 * 4096 * 3
    assert peak < level_bytes / 20, f"peak {peak / 1e6:.1f} MB for a {level_bytes / 1e6:.0f} MB level"


def test_free_heap_memory_goes_back_to_the_system():
    """What a slide's blocks free is returned after each (glibc's malloc_trim): 64 MB of small
    arrays freed below a live one stay resident until then."""
    import os

    from nucleiseg.io import _malloc_trim, return_free_memory

    if _malloc_trim() is None or not Path("/proc/self/statm").is_file():
        pytest.skip("needs glibc and /proc")

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    arrays = [np.ones(8_000) for _ in range(1000)]  # 64 KB each: from the heap, below the mmap threshold
    keep = np.ones(8_000)  # above them, so the heap's top cannot shrink past them
    del arrays
    freed = resident_mb()
    return_free_memory()
    assert resident_mb() < freed - 40
    assert keep.sum() == 8_000


def test_tissue_mask_finds_stained_tissue_not_glass():
    thumb = np.full((100, 120, 3), GLASS, np.uint8)
    thumb[20:60, 30:90] = (200, 120, 190)  # pink-purple stain
    thumb[70:90, 10:30] = (120, 120, 120)  # dark but unstained: dust, a shadow
    mask = tissue_mask(thumb)
    assert mask[25:55, 35:85].all()
    assert not mask[:15].any() and not mask[75:85, 15:25].any()
    # grown by one pixel, no more
    assert mask[19, 40] and not mask[17, 40]
    # an all-tissue thumbnail stays all tissue; a gray (fluorescence) one has no glass to find
    assert tissue_mask(np.full((40, 40, 3), (200, 120, 190), np.uint8)).all()
    assert tissue_mask(np.zeros((40, 40), np.uint16)).all()


def test_not_a_slide_and_bad_files(tmp_path):
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((64, 64), np.uint8))
    assert not is_slide(small)
    assert not is_slide(tmp_path / "missing.tif")
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a tiff at all")
    assert not is_slide(junk)
    with pytest.raises(ImageReadError, match="junk.svs: not a readable TIFF"):
        open_slide(junk)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 2, 64, 64), np.uint8), metadata={"axes": "TCYX"})
    with pytest.raises(ImageReadError, match="stack.tif: expected a 2-D gray or RGB slide"):
        open_slide(stack)


# --- prediction ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_file(device="cpu")


def test_slide_prediction_equals_blockwise_prediction_in_memory(tmp_path, predictor):
    """Same nuclei from the slide, read lazily, as from its pixels in memory; GeoJSON and table
    agree with the label image; the glass block is skipped."""
    image = mosaic(3, 3, glass_cols=640)  # 768 x 1600: the last block column is glass only
    path = tmp_path / "slide.tif"
    write_slide(path, image, 0.25, "ome", compression="zlib", smallest_side=400)
    options = PredictOptions(block_size=400, diameter=None, geojson=True, measure=True, overlay=True)
    [result] = predict_files([path], tmp_path / "out", predictor, options)
    assert result.status == "done" and not result.error
    labels = read_label_image(tmp_path / "out" / "slide.tif")
    assert labels.shape == image.shape[:2]

    with open_slide(path) as slide:
        _, thumbnail = read_thumbnail(slide)
    norm = predictor.config.normalization
    params = input_params(thumbnail, norm.channels, norm.p_low, norm.p_high)
    expected, stats = predict_blockwise(predictor, image, 400, DEFAULT_HALO, params=params)
    assert result.n_nuclei == stats.nuclei == int(expected.max()) > 50
    np.testing.assert_array_equal(labels, expected)
    assert not labels[:, 1000:].any()  # glass

    # GeoJSON read back (pixel centres inside each polygon) is the label image
    assert (tmp_path / "out" / "slide.geojson").is_file()
    back, _ = read_geojson(tmp_path / "out" / "slide.geojson", labels.shape)
    features = json.loads((tmp_path / "out" / "slide.geojson").read_text())["features"]
    assert len(features) == result.n_nuclei
    assert [f["properties"]["name"] for f in features] == [str(i) for i in range(1, result.n_nuclei + 1)]
    agree = (back > 0) == (labels > 0)
    assert agree.mean() > 0.999
    # the per-nucleus table, measured block by block, equals one measurement of the whole
    import csv

    rows = list(csv.DictReader(open(tmp_path / "out" / "slide_nuclei.csv")))
    whole = measure_nuclei(labels, image, 0.25)
    assert len(rows) == whole["label"].size
    for name in ("label", "area_px", "centroid_row", "centroid_col", "bbox_min_row", "bbox_max_col", "mean_intensity"):
        np.testing.assert_allclose([float(r[name]) for r in rows], whole[name], rtol=1e-5, err_msg=name)
    # the label image carries the slide's pixel size
    with tifffile.TiffFile(tmp_path / "out" / "slide.tif") as tif:
        assert read_pixel_size(tif) == pytest.approx(0.25)
    assert (tmp_path / "out" / "slide_overlay.png").is_file()


def test_glass_blocks_are_skipped(tmp_path, predictor):
    from nucleiseg.data.slides import open_slide as open_
    from nucleiseg.inference.slide import predict_slide
    from nucleiseg.io import output_paths

    image = mosaic(2, 2, glass_cols=900)
    path = tmp_path / "glass.tif"
    write_slide(path, image, None, "tiff", compression="zlib", smallest_side=300)
    with open_(path) as slide:
        result = predict_slide(predictor, slide, output_paths(tmp_path / "out", "glass"),
                               PredictOptions(block_size=400, diameter=None, overlay=False))
    assert result.stats.skipped >= 2 and result.stats.blocks >= 2
    assert 0.3 < result.tissue_fraction < 0.8
    assert result.pixel_size is None and result.n_nuclei > 20


def test_corrupt_tile_is_reported_with_its_position_and_the_rest_predicted(tmp_path, predictor):
    image = mosaic(2, 3)  # 512 x 960
    path = tmp_path / "damaged.tif"
    write_slide(path, image, 0.25, "ome", tile=256, compression="zlib", smallest_side=300)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[3], page.databytecounts[3]  # tile row 0, column 3
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)
    [result] = predict_files([path], tmp_path / "out", predictor,
                             PredictOptions(block_size=320, diameter=None, overlay=False))
    assert result.status == "done"
    assert "unreadable" in result.error and "columns" in result.error
    labels = read_label_image(tmp_path / "out" / "damaged.tif")
    assert labels[:, :500].any()  # blocks away from the damaged tile were predicted


# --- stopping and resuming -------------------------------------------------------------------

def test_block_cache_round_trip_and_key(tmp_path):
    from nucleiseg.inference.blockwise import BlockCache, BlockObjects

    rng = np.random.default_rng(1)
    masks = [rng.random((5, 7)) > 0.5, rng.random((1, 1)) > -1, rng.random((12, 3)) > 0.3]
    objects = BlockObjects([(10, 20), (0, 0), (300, 4000)], masks, 1)
    cache = BlockCache(tmp_path / "c", "key-1")
    assert cache.get(0, 1) is None
    cache.put(0, 1, objects)
    cache.put(2, 2, BlockObjects([], [], 0))
    back = BlockCache(tmp_path / "c", "key-1").get(0, 1)
    assert back.origins == objects.origins and back.truncated == 1
    for a, b in zip(back.masks, masks):
        np.testing.assert_array_equal(a, b)
    assert BlockCache(tmp_path / "c", "key-1").get(2, 2).masks == []
    assert BlockCache(tmp_path / "c", "key-2").get(0, 1) is None  # another model or options: discarded
    cache = BlockCache(tmp_path / "c", "key-2")
    cache.put(0, 0, objects)
    assert BlockCache(tmp_path / "c", "key-2", fresh=True).get(0, 0) is None


@pytest.mark.slow
def test_a_killed_slide_run_resumes_to_the_same_nuclei(tmp_path):
    """SIGKILL in the middle of a slide, then --skip-existing: the labels and GeoJSON of an
    uninterrupted run, with the finished blocks read back rather than predicted again."""
    import signal
    import subprocess
    import sys
    import time

    image = mosaic(3, 4)  # 768 x 1280: 3 x 4 blocks of 320
    path = tmp_path / "slide.tif"
    write_slide(path, image, 0.25, "ome", compression="zlib", smallest_side=400)
    command = [sys.executable, "-m", "nucleiseg", "-q", "predict", str(path), "--geojson", "--no-overlay",
               "--block-size", "320", "--diameter", "none"]
    subprocess.run(command + ["-o", str(tmp_path / "whole")], check=True, capture_output=True, timeout=600)

    out = tmp_path / "resumed"
    proc = subprocess.Popen(command + ["-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blocks = out / ".slide.blocks"
    deadline = time.time() + 300
    while len(list(blocks.glob("block_*.npz"))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(blocks.glob("block_*.npz")))
    assert 4 <= done_before < 12 and not (out / "slide.tif").exists() and not (out / "slide.geojson").exists()

    subprocess.run(command + ["-o", str(out), "--skip-existing"], check=True, capture_output=True, timeout=600)
    np.testing.assert_array_equal(read_label_image(out / "slide.tif"), read_label_image(tmp_path / "whole" / "slide.tif"))
    assert (out / "slide.geojson").read_text() == (tmp_path / "whole" / "slide.geojson").read_text()
    assert not blocks.exists()  # finished: the cache is gone


def test_label_pyramid_written_band_by_band_reads_back(tmp_path):
    """A slide's label image: tiled, compressed, every level every other pixel of the one above,
    the pixel size in OME and resolution tags; from a memory map as from an array."""
    from nucleiseg.io import PYRAMID_MIN_SIDE, pyramid_levels, write_label_pyramid

    h, w = PYRAMID_MIN_SIDE + 808, 300
    rng = np.random.default_rng(2)
    labels = np.memmap(tmp_path / "canvas.u32", np.uint32, "w+", shape=(h, w))
    labels[:] = np.repeat(rng.integers(0, 70000, (h // 8 + 1, w), dtype=np.uint32), 8, axis=0)[:h]
    write_label_pyramid(tmp_path / "labels.tif", labels, pixel_size=0.5)
    np.testing.assert_array_equal(read_label_image(tmp_path / "labels.tif"), labels)
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert tif.is_ome and tif.pages[0].is_tiled and tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert read_pixel_size(tif) == pytest.approx(0.5)
        levels = tif.series[0].levels
        assert len(levels) == 1 + pyramid_levels((h, w))
        for k, level in enumerate(levels):
            np.testing.assert_array_equal(level.asarray(), labels[:: 2**k, :: 2**k])


def test_region_and_level_come_back_in_level0_pixels(tmp_path, predictor):
    """--region predicts a rectangle of level 0 (label image of its size, GeoJSON and table in
    slide coordinates); --level 1 predicts the half-resolution level, coordinates doubled."""
    import csv

    from nucleiseg.metrics import image_metrics

    image = mosaic(3, 4)  # 768 x 1280
    path = tmp_path / "slide.tif"
    write_slide(path, image, 0.25, "ome", compression="zlib", smallest_side=400)
    base = {"block_size": 320, "diameter": None, "overlay": False, "geojson": True, "measure": True}
    [whole] = predict_files([path], tmp_path / "whole", predictor, PredictOptions(**base))
    [part] = predict_files([path], tmp_path / "part", predictor, PredictOptions(**base, region=(320, 256, 640, 384)))
    assert whole.status == part.status == "done"
    full, crop = read_label_image(tmp_path / "whole" / "slide.tif"), read_label_image(tmp_path / "part" / "slide.tif")
    assert crop.shape == (384, 640)
    assert image_metrics(full[256:640, 320:960], crop).dsb_score > 0.7  # same nuclei but at the region's edges
    rows = list(csv.DictReader(open(tmp_path / "part" / "slide_nuclei.csv")))
    ys, xs = [float(r["centroid_row"]) for r in rows], [float(r["centroid_col"]) for r in rows]
    assert 256 <= min(ys) and max(ys) < 640 and 320 <= min(xs) and max(xs) < 960
    back, _ = read_geojson(tmp_path / "part" / "slide.geojson", full.shape)
    assert (back[256:640, 320:960] > 0).mean() > 0.9 * (crop > 0).mean() and not back[:200].any()

    [half] = predict_files([path], tmp_path / "half", predictor, PredictOptions(**base, level=1))
    assert half.status == "done" and half.n_nuclei > 20
    assert read_label_image(tmp_path / "half" / "slide.tif").shape == (384, 640)
    rows = list(csv.DictReader(open(tmp_path / "half" / "slide_nuclei.csv")))
    assert max(float(r["bbox_max_col"]) for r in rows) > 1100  # level-0 columns (the level has 640)
    features = json.loads((tmp_path / "half" / "slide.geojson").read_text())["features"]
    xs = [x for f in features for ring in f["geometry"]["coordinates"] for x, _ in
          (ring if f["geometry"]["type"] == "Polygon" else ring[0])]
    assert max(xs) > 1100
    with tifffile.TiffFile(tmp_path / "half" / "slide.tif") as tif:
        assert read_pixel_size(tif) == pytest.approx(0.5)  # the level's pixels are twice as large

    [bad] = predict_files([path], tmp_path / "bad", predictor, PredictOptions(**base, region=(5000, 0, 10, 10)))
    assert bad.status == "failed" and "lies outside the slide" in bad.error
    [bad] = predict_files([path], tmp_path / "bad", predictor, PredictOptions(**base, level=7))
    assert bad.status == "failed" and "no level 7 (the slide has 3)" in bad.error


@pytest.mark.slow
def test_slide_spread_over_a_cluster_in_regions_equals_one_process(tmp_path, predictor):
    """A slide's blocks predicted by region tasks on 2 workers, then written from the block
    cache: the label image, GeoJSON and table of one process, byte for byte (issue 24 item 6)."""
    pytest.importorskip("distributed", reason="the cluster extra is not installed")
    from distributed import get_task_stream

    from nucleiseg.inference.cluster import REGION_BLOCKS, connect, predict_on_cluster

    path = tmp_path / "slide.tif"
    write_slide(path, mosaic(3, 4, glass_cols=640), 0.25, "ome", compression="zlib", smallest_side=400)  # 768 x 1920
    options = PredictOptions(block_size=320, diameter=None, geojson=True, measure=True, overlay=False)
    [one] = predict_files([path], tmp_path / "one", predictor, options)
    with connect(workers=2) as client, get_task_stream(client) as stream:
        [spread] = predict_on_cluster(client, [path], tmp_path / "spread", None, options, device="cpu")
    assert spread.status == one.status == "done" and not spread.error
    assert spread.n_nuclei == one.n_nuclei > 100
    for name in ("slide.geojson", "slide_nuclei.csv"):
        assert (tmp_path / "spread" / name).read_text() == (tmp_path / "one" / name).read_text()
    np.testing.assert_array_equal(read_label_image(tmp_path / "spread" / "slide.tif"),
                                  read_label_image(tmp_path / "one" / "slide.tif"))
    regions = [t for t in stream.data if t["key"].startswith("nucleiseg-region-")]
    assert len(regions) == -(-15 // REGION_BLOCKS)  # 3 x 5 blocks reach tissue; the last column, glass, is not sent
    assert len({t["worker"] for t in regions}) == 2
    assert not (tmp_path / "spread" / ".slide.blocks").exists()


def test_a_given_plan_is_used_not_made_again(tmp_path, predictor, monkeypatch):
    """predict_slide with the plan a cluster's plan task made: not planned again (plan_slide
    not called), and the outputs, overlay included, those of a run that plans for itself."""
    from nucleiseg.inference import slide as slide_module
    from nucleiseg.io import output_paths

    path = tmp_path / "slide.tif"
    write_slide(path, mosaic(2, 2), 0.25, "ome", compression="zlib", smallest_side=200)
    options = PredictOptions(block_size=320, diameter=None, geojson=True, overlay=True)
    with open_slide(path) as slide:
        plan, _ = slide_module.plan_slide(predictor, slide, options)
        planned = slide_module.predict_slide(predictor, slide, output_paths(tmp_path / "a", "slide"), options)

        def no_planning(*args):
            raise AssertionError("planned again")

        monkeypatch.setattr(slide_module, "plan_slide", no_planning)
        given = slide_module.predict_slide(predictor, slide, output_paths(tmp_path / "b", "slide"), options,
                                           plan=plan)
    assert given.n_nuclei == planned.n_nuclei > 20
    for name in ("slide.geojson", "slide_overlay.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    np.testing.assert_array_equal(read_label_image(tmp_path / "a" / "slide.tif"),
                                  read_label_image(tmp_path / "b" / "slide.tif"))


def test_the_block_cache_key_follows_the_tiles(tmp_path, predictor):
    """Where the tiles' seams fall changes a block's probabilities, so a run resumed with another
    tile size or overlap (another device's default, or --tile-size) recomputes its blocks."""
    import copy

    from nucleiseg.inference import slide as slide_module

    path = tmp_path / "slide.tif"
    write_slide(path, mosaic(2, 2), 0.25, "ome", compression="zlib", smallest_side=200)
    options = PredictOptions(block_size=320, diameter=None)
    keys = []
    with open_slide(path) as slide:
        for tile_size, overlap in ((768, 64), (768, 64), (1024, 64), (768, 32)):
            other = copy.copy(predictor)
            other.tile_size, other.overlap = tile_size, overlap
            keys.append(slide_module.plan_slide(other, slide, options)[0].key)
    assert keys[0] == keys[1] and len(set(keys)) == 3


def test_watershed_in_worker_processes_gives_the_nuclei_of_one_process(tmp_path, predictor):
    """--watershed-processes 2: the blocks' watershed, measurements and outlines run in two
    worker processes while the network goes on; label image, GeoJSON and table byte-identical to
    one process, and every block's watershed time was counted (issue 24 item 2)."""
    path = tmp_path / "slide.tif"
    write_slide(path, mosaic(3, 4, glass_cols=640), 0.25, "ome", compression="zlib", smallest_side=400)
    base = dict(block_size=320, diameter=None, geojson=True, measure=True, overlay=False)
    [one] = predict_files([path], tmp_path / "one", predictor, PredictOptions(**base, watershed_processes=0))
    [pool] = predict_files([path], tmp_path / "pool", predictor, PredictOptions(**base, watershed_processes=2))
    assert pool.status == one.status == "done" and not pool.error
    assert pool.n_nuclei == one.n_nuclei > 100
    for name in ("slide.geojson", "slide_nuclei.csv"):
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    np.testing.assert_array_equal(read_label_image(tmp_path / "pool" / "slide.tif"),
                                  read_label_image(tmp_path / "one" / "slide.tif"))


def test_results_come_back_in_the_order_their_work_went_in():
    """InOrder: work that finishes out of order (later items sleep less) is handed back in the
    order it was put in; at most one more item than the pool has workers waits."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from nucleiseg.inference.blockwise import InOrder, WorkerPool, postprocess_processes

    def work(k: int) -> int:
        time.sleep(0.05 * (5 - k))
        return k * k

    seen, most = [], 0
    with ThreadPoolExecutor(3) as pool:
        queue = InOrder(WorkerPool(pool, 3))
        for k in range(6):
            queue.put(k, work, k)
            seen += list(queue.ready())
            most = max(most, len(queue))
        seen += list(queue.ready(wait_all=True))
    assert seen == [(k, k * k) for k in range(6)] and most <= 4
    queue = InOrder()  # no pool: done at once
    queue.put("a", work, 5)
    queue.put("b", None, 7)
    assert list(queue.ready()) == [("a", 25), ("b", 7)]
    assert postprocess_processes(3, "cpu") == 3 and postprocess_processes(None, "cpu") == 0
    assert 0 <= postprocess_processes(None, "cuda") <= 8
    with pytest.raises(ValueError, match="watershed processes"):
        postprocess_processes(-1, "cpu")
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as daemonic:  # its workers may start no processes
        assert daemonic.apply(postprocess_processes, (3, "cuda")) == 0
    with pytest.raises(ValueError, match="watershed processes"):
        PredictOptions(watershed_processes=-1)


def test_slide_progress_counts_megapixels(predictor):
    """The blocks' progress description gives their mean megapixels, so the command line's bar
    counts megapixels: over all blocks they add up to the image's pixels."""
    from nucleiseg.progress import parse_sized, sized

    assert parse_sized(sized("blocks", 4.194304, "Mpx")) == ("blocks", pytest.approx(4.194304, rel=1e-5), "Mpx")
    assert parse_sized("predict") is None
    seen = []

    def progress(items, total=None, description=""):
        seen.append((total, description))
        return items

    image = mosaic(2, 3)  # 512 x 960: 2 x 4 blocks of at most 256 px
    predict_blockwise(predictor, image, 256, 64, progress=progress)
    [(total, description)] = seen
    name, size, unit = parse_sized(description)
    assert (name, unit, total) == ("blocks", "Mpx", 8)
    assert size * total == pytest.approx(image.shape[0] * image.shape[1] / 1e6, rel=1e-5)


def test_geojson_gz_holds_the_same_features(tmp_path, predictor):
    """--geojson-gz: a slide's streamed GeoJSON and an ordinary image's, gzip-compressed, read
    back to the features of the plain files; --skip-existing knows them."""
    import gzip
    import shutil

    from nucleiseg.geojson import read_features

    src = tmp_path / "in"
    src.mkdir()
    write_slide(src / "slide.tif", mosaic(2, 2), 0.25, "ome", compression="zlib", smallest_side=200)
    shutil.copy(next((bundled_samples_dir() / "images").glob("00ae65c1c663*.png")), src / "tile.png")
    base = dict(block_size=320, diameter=None, geojson=True, overlay=False)
    plain = predict_files([src], tmp_path / "plain", predictor, PredictOptions(**base))
    packed = predict_files([src], tmp_path / "gz", predictor, PredictOptions(**base, geojson_gz=True))
    assert [r.status for r in plain + packed] == ["done"] * 4
    for image_id in ("slide", "tile"):
        gz = tmp_path / "gz" / f"{image_id}.geojson.gz"
        assert gz.read_bytes()[:2] == b"\x1f\x8b" and not (tmp_path / "gz" / f"{image_id}.geojson").exists()
        assert json.loads(gzip.decompress(gz.read_bytes()))["type"] == "FeatureCollection"
        features = read_features(gz)
        assert len(features) > 20 and features == read_features(tmp_path / "plain" / f"{image_id}.geojson")
    again = predict_files([src], tmp_path / "gz", predictor, PredictOptions(**base, geojson_gz=True, skip_existing=True))
    assert [r.status for r in again] == ["skipped"] * 2


def test_bench_slide_command_runs_the_lazy_path_with_worker_processes(tmp_path):
    """`nucleiseg bench slide` on a small slide of the bundled H&E samples: the lazy path with one
    worker process and the whole-image path find about the same nuclei; the device is named."""
    from click.testing import CliRunner

    from nucleiseg.cli import main

    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["-q", "bench", "slide", "--side", "2048", "--device", "cpu", "--watershed-processes",
                                  "1", "--json", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    lazy, whole = result["rows"]
    assert result["device"] == "cpu" and "network on cpu" in r.output
    assert lazy["nuclei"] > 1000 and abs(lazy["nuclei"] - whole["nuclei"]) < 0.02 * whole["nuclei"]
    assert result["dsb_between_paths"] > 0.95
