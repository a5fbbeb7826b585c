"""Reading rasters (every spacenet sample file, nodata, bands, huge files) and writing masks."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA, shared_data
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window

import sbanet.geo.raster
from sbanet.geo.raster import GeoInfo, crs_string, geo_metadata, open_dataset, open_raster, parse_bands, read_geoimage
from sbanet.geo.writers import read_mask, write_mask_geotiff
from sbanet.image import percentile_stretch, read_image, to_rgb8

SPACENET = SHARED_DATA / "spacenet-sample"
SPACENET_TIFS = sorted(p.name for p in SPACENET.glob("*.tif")) or ["(absent)"]


def write_geotiff(path, array, crs="EPSG:32616", transform=None, nodata=None, **extra):
    """A test GeoTIFF from ``[C, H, W]``."""
    transform = transform or Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0)
    count, height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype, crs=crs)
    profile.update(transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


@pytest.mark.parametrize("name", SPACENET_TIFS)
def test_every_spacenet_file_reads_with_its_georeferencing(name):
    path = shared_data("spacenet-sample", name)
    info = geo_metadata(path)
    with open_dataset(path) as ds:
        assert (info.width, info.height, info.band_count, info.dtype) == (ds.width, ds.height, ds.count, ds.dtypes[0])
        assert info.transform == tuple(ds.transform)[:6]
        assert (info.crs is None) == (ds.crs is None)
        if ds.crs is not None:
            assert CRS.from_user_input(info.crs) == ds.crs
    image = read_geoimage(path)
    assert image.rgb.shape == (info.height, info.width, 3) and image.rgb.dtype == np.uint8
    assert image.transform == info.affine and image.crs == info.crs
    assert image.valid.all()  # none of the samples has nodata pixels
    # the store round-trips the header through JSON
    assert GeoInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_spacenet_specifics():
    pan = geo_metadata(shared_data("spacenet-sample", "sample_geotiff.tif"))
    assert (pan.crs, pan.dtype, pan.band_count, pan.nodata) == ("EPSG:32616", "uint16", 1, 0.0)
    assert pan.transform == (0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)
    assert pan.bounds == (733601.0, 3724689.0, 734051.0, 3725139.0)
    ms = geo_metadata(SPACENET / "ms1.tif")
    assert (ms.crs, ms.dtype, ms.band_count) == ("EPSG:32631", "float64", 4)
    road = geo_metadata(SPACENET / "road_mask_input.tif")
    assert road.crs == "EPSG:4326" and road.dtype == "uint16"
    left, bottom, right, top = road.bounds
    assert -116 < left < right < -115 and 36 < bottom < top < 36.2  # lon / lat degrees
    mask = geo_metadata(SPACENET / "sample_fp_mask.tif")
    assert mask.crs is None and not mask.is_georeferenced and mask.affine == Affine.identity()


def test_single_band_is_repeated_and_stretched_2_98():
    path = shared_data("spacenet-sample", "sample_geotiff.tif")
    rgb = read_geoimage(path).rgb
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    # the same conversion as the predictor's for an array (the file has no nodata pixels)
    np.testing.assert_array_equal(rgb, to_rgb8(read_image(path)))
    assert 0.01 < (rgb == 0).mean() < 0.03 and 0.01 < (rgb == 255).mean() < 0.03


def test_band_choice_multispectral_float():
    path = shared_data("spacenet-sample", "ms1.tif")
    data = read_image(path)  # [300, 300, 4] float64
    default = read_geoimage(path).rgb
    np.testing.assert_array_equal(default, percentile_stretch(data[..., :3]))
    chosen = read_geoimage(path, bands=parse_bands("4,3,2")).rgb
    np.testing.assert_array_equal(chosen, percentile_stretch(data[..., [3, 2, 1]]))
    assert not np.array_equal(default, chosen)
    np.testing.assert_array_equal(read_geoimage(path, bands=(3,)).rgb, percentile_stretch(data[..., [3, 3, 3]]))
    with pytest.raises(ValueError, match="bands"):
        read_geoimage(path, bands=(0, 1, 7))


def test_uint8_mask_is_not_stretched():
    rgb = read_geoimage(shared_data("spacenet-sample", "sample_fp_mask.tif")).rgb
    assert set(np.unique(rgb)) == {0, 255}


@pytest.mark.parametrize(("text", "bands"), [("3,2,1", (2, 1, 0)), ("1", (0,)), (" 4, 1,2", (3, 0, 1))])
def test_parse_bands(text, bands):
    assert parse_bands(text) == bands


@pytest.mark.parametrize("text", ["0,1,2", "1,2", "a,b,c", ""])
def test_parse_bands_refuses(text):
    with pytest.raises(ValueError, match="band"):
        parse_bands(text)


def test_nodata_is_excluded_from_percentiles_and_shown_as_zero(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, (3, 60, 80), dtype=np.uint16)
    data[:, :, :20] = 0  # a quarter of the scene is nodata
    path = write_geotiff(tmp_path / "nodata.tif", data, nodata=0)
    image = read_geoimage(path)
    assert not image.valid[:, :20].any() and image.valid[:, 20:].all()
    assert (image.rgb[:, :20] == 0).all()
    valid_part = np.moveaxis(data[:, :, 20:], 0, -1)
    np.testing.assert_array_equal(image.rgb[:, 20:], percentile_stretch(valid_part))
    # without nodata handling the zeros would set the low percentile and darken everything
    assert image.rgb[:, 20:].mean() < to_rgb8(np.moveaxis(data, 0, -1))[:, 20:].mean() - 20


def test_nan_and_float_nodata(tmp_path):
    data = np.linspace(0, 1, 3 * 40 * 40, dtype=np.float32).reshape(3, 40, 40)
    data[0, :5] = np.nan
    data[:, -5:] = -9999.0
    image = read_geoimage(write_geotiff(tmp_path / "f.tif", data, nodata=-9999.0))
    assert not image.valid[:5].any() and not image.valid[-5:].any() and image.valid[5:-5].all()
    assert (image.rgb[~image.valid] == 0).all()


def test_window_and_decimated_reads_keep_georeferencing():
    path = shared_data("spacenet-sample", "sample_geotiff.tif")
    full = read_geoimage(path)
    window = read_geoimage(path, window=Window(100, 200, 50, 40))  # col, row, width, height
    np.testing.assert_array_equal(window.rgb, full.rgb[200:240, 100:150])  # scene-wide stretch
    assert window.transform @ (0, 0) == full.transform @ (100, 200)
    small = read_geoimage(path, max_size=300)
    assert small.rgb.shape == (300, 300, 3)
    assert small.transform @ (300, 300) == full.transform @ (900, 900)


def test_crs_string_is_exact():
    assert crs_string(CRS.from_epsg(32616)) == "EPSG:32616"
    custom = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=10.3 +k=0.9993 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m")
    text = crs_string(custom)
    assert not text.startswith("EPSG") and CRS.from_user_input(text) == custom
    assert crs_string(None) is None


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        geo_metadata(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="cannot read"):
        geo_metadata(tmp_path / "junk.tif")
    with pytest.raises(ValueError, match="cannot read"):
        open_raster(tmp_path / "junk.tif")


def test_images_over_pillows_limit_are_read_by_window(tmp_path, monkeypatch):
    """Pillow refuses (decompression bomb); the raster path reads windows instead."""
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, (600, 500, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 300k pixels: over twice the limit
    with pytest.raises(ValueError, match="too large"):
        read_image(tmp_path / "big.png")
    with open_raster(tmp_path / "big.png") as source:
        assert isinstance(source, sbanet.geo.raster.RasterioSource)
        rgb, valid = source.read(Window(50, 100, 64, 32))
    np.testing.assert_array_equal(rgb, array[100:132, 50:114])
    assert valid.all()


def test_tile_reads_of_a_large_geotiff_stay_bounded(tmp_path, monkeypatch):
    """A tile costs memory on the order of a tile, not of the raster (stats from a decimated read)."""
    height, width = 1536, 1536
    yy, xx = np.mgrid[0:height, 0:width]
    data = np.stack([(yy * 7 + xx * 3) % 4096, (yy * 2) % 4096, (xx * 5) % 4096]).astype(np.uint16)
    path = write_geotiff(tmp_path / "large.tif", data, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    full_rgb = np.moveaxis(data, 0, -1)
    del data, yy, xx
    monkeypatch.setattr(sbanet.geo.raster, "STATS_MAX_PIXELS", 65_536)  # a 256 x 256 overview for the stretch
    tracemalloc.start()
    try:
        with open_raster(path) as source:
            rgb, _ = source.read(Window(512, 768, 256, 256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    raster_bytes, tile_bytes = height * width * 3 * 2, 256 * 256 * 3 * 2
    message = f"peak {peak / 1e6:.1f} MB for a {raster_bytes / 1e6:.1f} MB raster"
    assert peak < min(raster_bytes / 4, 12 * tile_bytes), message
    # the decimated statistics agree with the full ones to within a few grey levels
    expected = full_rgb[768:1024, 512:768]
    lows, highs = np.percentile(full_rgb.reshape(-1, 3), [2, 98], axis=0)
    scaled = np.clip((expected - lows) * 255.0 / (highs - lows), 0, 255)
    assert np.abs(rgb.astype(float) - scaled).mean() < 3


# --- writing ----------------------------------------------------------------------------------
def test_mask_geotiff_keeps_crs_transform_and_marks_nodata(tmp_path):
    info = geo_metadata(shared_data("spacenet-sample", "sample_geotiff.tif"))
    mask = np.zeros((info.height, info.width), bool)
    mask[100:200, 300:450] = True
    valid = np.ones_like(mask)
    valid[-10:] = False
    path = write_mask_geotiff(tmp_path / "mask.tif", mask, info, valid)
    with rasterio.open(path) as ds:
        assert ds.crs == CRS.from_epsg(32616) and ds.transform == info.affine
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.compression.value.lower() == "deflate" and ds.profile["tiled"]
        band = ds.read(1)
        assert ds.colormap(1)[1][:3] == (255, 255, 255)
    assert set(np.unique(band)) == {0, 1, 255}
    assert (band[-10:] == 255).all()
    np.testing.assert_array_equal(read_mask(path), mask & valid)
    with pytest.raises(ValueError, match="900x900"):
        write_mask_geotiff(tmp_path / "bad.tif", mask[:10], info)
