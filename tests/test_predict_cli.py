"""`python -m sbanet.predict` end to end on a real GeoTIFF and a PNG, and its error messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from conftest import shared_data
from PIL import Image
from shapely.geometry import shape

from sbanet import sbanet_tiny
from sbanet.checkpoint import save_pretrained
from sbanet.geo.raster import geo_metadata
from sbanet.geo.scenes import output_paths
from sbanet.inference.predictor import Predictor
from sbanet.predict import main, slug

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["all buildings", "the road"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny model at a small input size (fast tiles), saved like a real checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-96"
    return save_pretrained(sbanet_tiny(image_size=96).eval(), path, tokenizer=tokenizer, metadata={"version": "t1"})


def test_geotiff_end_to_end(checkpoint, tmp_path, capsys):
    """4-band float64 EPSG:32631 scene, bands 3,2,1, two expressions: every output per expression.

    The random model's probabilities sit near 0.4 everywhere; a low threshold makes the mask the
    whole scene, so the polygons are the scene's footprint (known in both CRSs)."""
    scene = shared_data("spacenet-sample", "ms1.tif")
    info = geo_metadata(scene)
    args = [str(scene), *TEXTS, "--model", str(checkpoint), "--bands", "3,2,1", "--tile-overlap", "24", "-q"]
    args += ["-o", str(tmp_path / "mask.tif"), "--probability", str(tmp_path / "p.tif"), "--threshold", "0.05"]
    args += ["--vector", str(tmp_path / "b.gpkg"), "--geojson", str(tmp_path / "b.geojson")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    probability = {}
    for text in TEXTS:
        assert f"'{text}': {tmp_path / f'mask_{slug(text)}.tif'}, {tmp_path / f'p_{slug(text)}.tif'}" in printed
        with rasterio.open(tmp_path / f"p_{slug(text)}.tif") as ds:
            assert ds.crs.to_epsg() == 32631 and ds.transform == info.affine and ds.dtypes[0] == "float32"
            probability[text] = ds.read(1)
        with rasterio.open(tmp_path / f"mask_{slug(text)}.tif") as ds:
            assert ds.crs.to_epsg() == 32631 and ds.transform == info.affine
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.compression.value.lower() == "deflate"
            mask = ds.read(1)
        np.testing.assert_array_equal(mask, (probability[text] > 0.05).astype(np.uint8))
        gpkg = pyogrio.read_info(tmp_path / f"b_{slug(text)}.gpkg")
        assert gpkg["crs"] == "EPSG:32631" and gpkg["features"] == 1
        np.testing.assert_allclose(gpkg["total_bounds"], info.bounds)
        collection = json.loads((tmp_path / f"b_{slug(text)}.geojson").read_text())
        assert "crs" not in collection and len(collection["features"]) == 1
        (feature,) = collection["features"]
        props = feature["properties"]
        assert (props["expression"], props["model"], props["model_version"]) == (text, "tiny-96", "t1")
        assert props["area"] == pytest.approx(300 * 300 * 1.0000483**2, rel=2e-3)  # m^2, 1 m pixels
        lon, lat = shape(feature["geometry"]).centroid.coords[0]
        assert 4 < lon < 5 and 51 < lat < 53  # UTM 31N scene: WGS 84, longitude first
    assert not np.allclose(probability[TEXTS[0]], probability[TEXTS[1]])  # each expression its own map


def test_png_in_png_out_matches_the_predictor(tmp_path, tokenizer):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    torch.manual_seed(0)  # --preset builds from the same seed as the reference below
    args = [str(tmp_path / "image.png"), "the water", "-o", str(tmp_path / "mask.png"), "--threshold", "0.4"]
    assert main([*args, "--preset", "sbanet_tiny", "--vector", str(tmp_path / "w.gpkg"), "-q"]) == 0
    torch.manual_seed(0)
    expected = Predictor(sbanet_tiny().eval(), tokenizer).predict(image, "the water", threshold=0.4).mask
    written = np.asarray(Image.open(tmp_path / "mask.png"))
    assert written.shape == (64, 80) and set(np.unique(written)) <= {0, 255}
    np.testing.assert_array_equal(written == 255, expected)
    assert pyogrio.read_info(tmp_path / "w.gpkg")["crs"] is None  # pixel coordinates


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to write"),
        (["-o", "mask.jpg"], "--out must end in"),
        (["--vector", "b.shp"], "--vector must end in"),
        (["-o", "m.tif", "--threshold", "1.5"], "threshold"),
        (["-o", "m.tif", "--bands", "0,1,2"], "counted from 1"),
        (["-o", "m.tif", "--bands", "1,2,9"], "bands"),
        (["-o", "m.tif", "--model", "/nonexistent/model"], "no checkpoint"),
    ],
)
def test_errors_are_one_clear_line(extra, message, tmp_path, capsys):
    scene = shared_data("spacenet-sample", "sample_geotiff.tif")
    extra = [str(tmp_path / e) if e.endswith((".jpg", ".shp", ".tif")) else e for e in extra]
    with pytest.raises(SystemExit) as exit_info:
        main([str(scene), "all buildings", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_geojson_needs_a_crs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(shared_data("spacenet-sample", "sample_fp_mask.tif")), "x", "--geojson", str(tmp_path / "a.json")])
    assert "needs a georeferenced image" in capsys.readouterr().err


def test_output_names_for_several_expressions():
    assert output_paths(Path("out/mask.tif"), ["the water"]) == [Path("out/mask.tif")]
    assert output_paths(Path("m.tif"), ["The Water!", "the  water", "roads"]) == [
        Path("m_the-water.tif"),
        Path("m_the-water-2.tif"),
        Path("m_roads.tif"),
    ]
    assert output_paths(None, ["a", "b"]) == [None, None]


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "sbanet.predict", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--vector" in done.stdout and "--tile-overlap" in done.stdout and "--bands" in done.stdout


@pytest.fixture
def scene_copy(tmp_path):
    """A copy of the small real GeoTIFF that a test may try to damage."""
    path = tmp_path / "scene.tif"
    shutil.copyfile(shared_data("spacenet-sample", "ms1.tif"), path)
    return path


def _one_line_refusal(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_the_input_is_never_an_output(scene_copy, spelling, capsys):
    """``scene.tif "the water" -o scene.tif`` (however the path is spelt) refuses before any
    work and leaves the input as it was."""
    before = scene_copy.read_bytes()
    target = {"same": scene_copy, "dotted": scene_copy.parent / "." / ".." / scene_copy.parent.name / "scene.tif"}
    if spelling == "symlink":
        target[spelling] = scene_copy.parent / "link.tif"
        target[spelling].symlink_to(scene_copy)
    if spelling == "hardlink":
        target[spelling] = scene_copy.parent / "hard.tif"
        os.link(scene_copy, target[spelling])
    argv = [str(scene_copy), "the water", "--preset", "sbanet_tiny", "-q", "-o", str(target[spelling])]
    _one_line_refusal(capsys, [*argv, "--overwrite"], "is the input image")
    assert scene_copy.read_bytes() == before


def test_an_existing_output_is_replaced_only_with_overwrite(scene_copy, tmp_path, capsys):
    mask = tmp_path / "mask.tif"
    mask.write_bytes(b"an earlier result")
    argv = [str(scene_copy), "the water", "--preset", "sbanet_tiny", "-q", "-o", str(mask)]
    _one_line_refusal(capsys, argv, "exists: pass --overwrite")
    assert mask.read_bytes() == b"an earlier result"
    assert main([*argv, "--overwrite"]) == 0
    with rasterio.open(mask) as ds:
        assert ds.shape == (300, 300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "scene.tif"]  # no partial file left


def test_missing_output_folders_are_created(scene_copy, tmp_path):
    mask, polygons = tmp_path / "new" / "deeper" / "mask.tif", tmp_path / "other" / "b.gpkg"
    assert (
        main(
            [str(scene_copy), "the water", "--preset", "sbanet_tiny", "-q", "-o", str(mask), "--vector", str(polygons)]
        )
        == 0
    )
    assert mask.is_file() and polygons.is_file()


def test_an_output_folder_that_cannot_be_made_is_one_line(scene_copy, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    argv = [str(scene_copy), "the water", "--preset", "sbanet_tiny", "-o", str(tmp_path / "a-file" / "mask.tif")]
    _one_line_refusal(capsys, argv, "cannot create the output folder")
