"""`python -m sbanet.predict` over many scenes: inputs, output names, resume, atomic writes,
Cloud-Optimized GeoTIFFs, the summary, and sharding under torchrun (2 gloo processes)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from conftest import shared_data
from PIL import Image
from rasterio.transform import Affine

from sbanet import sbanet_tiny
from sbanet.checkpoint import save_pretrained
from sbanet.geo.scenes import SceneJob, check_plan, find_inputs, plan_folder, shard, unique_slugs
from sbanet.geo.vector import mask_to_polygons
from sbanet.inference.predictor import Predictor
from sbanet.predict import main

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["all buildings", "All buildings!"]  # one slug: the second becomes all-buildings-2


def _save(tokenizer, folder: Path, size: int) -> Path:
    torch.manual_seed(0)
    return save_pretrained(sbanet_tiny(image_size=size).eval(), folder, tokenizer=tokenizer, metadata={"version": "t"})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny model at a small input size (fast tiles)."""
    return _save(tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny-96", 96)


def _geotiff(path: Path, image: np.ndarray, nodata: float | None = None, crs: str | None = "EPSG:32631") -> Path:
    """``image [H, W, C]`` as a GeoTIFF at 0.5 m in UTM 31N (or without a CRS)."""
    profile = dict(driver="GTiff", width=image.shape[1], height=image.shape[0], count=image.shape[2])
    profile.update(
        dtype=str(image.dtype), crs=crs, nodata=nodata, transform=Affine(0.5, 0, 600000.0, 0, -0.5, 5800000.0)
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path


@pytest.fixture
def archive(tmp_path):
    """Two GeoTIFFs (one with a nodata corner) and a PNG without a CRS."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "archive"
    folder.mkdir()
    _geotiff(folder / "a.tif", rng.integers(1, 255, (130, 150, 3), dtype=np.uint8))
    b = rng.integers(1, 255, (100, 120, 3), dtype=np.uint8)
    b[:60, :70] = 0  # a nodata corner, inside tiles that also see data
    _geotiff(folder / "b.tif", b, nodata=0)
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(folder / "c.png")
    return folder


def _run(*argv: str) -> int:
    return main([*argv, "-q"])


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_find_inputs_files_folders_globs(archive, tmp_path):
    assert [p.name for p in find_inputs([archive])] == ["a.tif", "b.tif", "c.png"]
    assert [p.name for p in find_inputs([str(archive / "*.tif"), archive / "a.tif"])] == ["a.tif", "b.tif"]
    assert [p.name for p in find_inputs([str(tmp_path / "**" / "c.*")])] == ["c.png"]
    (tmp_path / "empty").mkdir()
    for bad, message in [
        (tmp_path / "nothing.tif", "not found"),
        (tmp_path / "empty", "no images"),
        ("x/*.tif", "match"),
    ]:
        with pytest.raises(ValueError, match=message):
            find_inputs([bad])


def test_names_slugs_and_collisions(tmp_path):
    assert unique_slugs(["The water", "the  water!", "roads", "the water"]) == [
        "the-water",
        "the-water-2",
        "roads",
        "the-water-3",
    ]
    (job,) = plan_folder([Path("x/s1.tif")], TEXTS, tmp_path, ["mask", "polygons"])
    assert [p.name for p in job.paths()] == [
        "s1__all-buildings.tif",
        "s1__all-buildings-2.tif",
        "s1__all-buildings.gpkg",
        "s1__all-buildings-2.gpkg",
    ]
    with pytest.raises(ValueError, match="two scenes are named 's1'"):
        plan_folder([Path("x/s1.tif"), Path("y/s1.tif")], TEXTS, tmp_path, ["mask"])


def test_check_plan_refuses_inputs_collisions_and_existing_files(tmp_path):
    image = tmp_path / "s.tif"
    image.write_bytes(b"scene")
    with pytest.raises(ValueError, match="is the input image"):
        check_plan([SceneJob(image, "s", {"mask": [tmp_path / "." / "s.tif"]})])
    with pytest.raises(ValueError, match="two outputs"):
        check_plan([SceneJob(image, "s", {"mask": [tmp_path / "m.tif"], "probability": [tmp_path / "m.tif"]})])
    (tmp_path / "m.tif").write_bytes(b"old")
    job = SceneJob(image, "s", {"mask": [tmp_path / "m.tif", tmp_path / "n.tif"]})
    with pytest.raises(ValueError, match="--overwrite"):
        check_plan([job])
    (resumed,) = check_plan([job], resume=True)
    assert resumed.pending("mask") == [None, tmp_path / "n.tif"] and not resumed.finished
    assert check_plan([job], overwrite=True)[0].pending("mask") == job.outputs["mask"]


def test_shard_covers_every_scene_once_and_balances():
    jobs = [SceneJob(Path(f"{i}.tif"), str(i), {}) for i in range(7)]
    sizes = [100, 10, 90, 20, 50, 50, 5]
    shares = [shard(jobs, sizes, r, 3) for r in range(3)]
    assert sorted(j.name for share in shares for j in share) == sorted(j.name for j in jobs)
    loads = [sum(sizes[int(j.name)] for j in share) for share in shares]
    assert max(loads) - min(loads) <= 20
    assert shard(jobs, sizes, 0, 1) == jobs
    with pytest.raises(ValueError, match="rank"):
        shard(jobs, sizes, 3, 3)


def test_folder_run_summary_and_resume(archive, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(archive), *TEXTS, "--model", str(checkpoint), "-d", str(out), "--threshold", "0.3"]
    assert _run(*argv) == 0
    assert "3 scenes: 3 predicted, 0 resumed, 0 failed" in capsys.readouterr().out
    names = {f"{s}__{t}.{e}" for s in "abc" for t in ("all-buildings", "all-buildings-2") for e in ("tif", "gpkg")}
    assert {p.name for p in out.iterdir()} == names | {"summary.csv", "summary.gpkg"}
    b = _read(out / "b__all-buildings.tif")
    assert (b[:60, :70] == 255).all() and set(np.unique(b[60:])) <= {0, 1}  # nodata stays nodata
    with rasterio.open(out / "a__all-buildings.tif") as ds, rasterio.open(archive / "a.tif") as src:
        assert ds.crs == src.crs and ds.transform == src.transform
    rows = {row["scene"]: row for row in _summary(out / "summary.csv")}
    assert [rows[s]["area_unit"] for s in "abc"] == ["m^2", "m^2", "pixels"]
    assert int(rows["b"]["valid_pixels"]) == 100 * 120 - 60 * 70
    for scene in "abc":
        pixels = int(rows[scene]["all-buildings_pixels"])
        assert pixels == int((_read(out / f"{scene}__all-buildings.tif") == 1).sum()) > 0
        assert rows[scene]["all-buildings_pixels"] == rows[scene]["all-buildings-2_pixels"]  # the same text
    assert float(rows["c"]["all-buildings_area"]) == int(rows["c"]["all-buildings_pixels"])
    assert float(rows["a"]["all-buildings_area"]) == pytest.approx(
        int(rows["a"]["all-buildings_pixels"]) * 0.25, rel=2e-3
    )
    meta, _, geometry, fields = pyogrio.raw.read(out / "summary.gpkg", layer="footprints")
    assert meta["crs"] == "EPSG:4326" and list(fields[0]) == ["a", "b"]  # no CRS: left out of the layer
    assert list(fields[list(meta["fields"]).index("all-buildings_pixels")]) == [
        int(rows[s]["all-buildings_pixels"]) for s in "ab"
    ]
    lon, lat = shapely.from_wkb(geometry[0]).centroid.coords[0]
    assert 4 < lon < 5 and 52 < lat < 53
    # nothing is replaced without a flag; --resume redoes only what is missing
    with pytest.raises(SystemExit):
        _run(*argv)
    assert "exists: pass --overwrite" in capsys.readouterr().err
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "b__all-buildings-2.gpkg").unlink()
    (out / ".b__all-buildings-2.partial.gpkg").write_bytes(b"what a killed run left")
    assert _run(*argv, "--resume") == 0
    assert "3 scenes: 1 predicted, 2 resumed, 0 failed" in capsys.readouterr().out
    assert not list(out.glob(".*"))
    for name, mtime in kept.items():
        if name.startswith(("a__", "c__", "b__all-buildings.")):
            assert (out / name).stat().st_mtime_ns == mtime
    assert pyogrio.read_info(out / "b__all-buildings-2.gpkg")["features"] > 0
    assert _summary(out / "summary.csv") == [
        {**row, "status": "resumed" if row["scene"] != "b" else "predicted"} for row in rows.values()
    ]


def test_a_failed_scene_leaves_no_file(archive, checkpoint, tmp_path, monkeypatch):
    import sbanet.geo.scene_run

    def dies_half_way(predictor, source, texts, *, writer, **kwargs):
        writer.write(0, np.zeros((len(texts), 10, source.width), np.float32), np.ones((10, source.width), bool))
        raise RuntimeError("killed")

    monkeypatch.setattr(sbanet.geo.scene_run, "predict_scene", dies_half_way)  # what the runner calls
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="killed"):
        _run(str(archive / "a.tif"), "-e", "the water", "--model", str(checkpoint), "-d", str(out))
    assert list(out.iterdir()) == []


def _assert_cog(path: Path) -> None:
    """GDAL's COG layout: the ghost header validate_cloud_optimized_geotiff.py reads (IFDs
    before the data, tiles in row order), tiled, and overviews."""
    head = path.read_bytes()[:400]
    for item in (b"LAYOUT=IFDS_BEFORE_DATA", b"BLOCK_ORDER=ROW_MAJOR", b"KNOWN_INCOMPATIBLE_EDITION=NO"):
        assert item in head
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256) and ds.overviews(1)[0] == 2


def test_cog_outputs(checkpoint, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (600, 520, 3), dtype=np.uint8)
    scene = _geotiff(tmp_path / "big.tif", image)
    out = tmp_path / "out"
    formats = "mask,probability"
    assert _run(str(scene), "the water", "--model", str(checkpoint), "-d", str(out), "--formats", formats, "--cog") == 0
    _assert_cog(out / "big__the-water.tif")
    _assert_cog(out / "big__the-water.probability.tif")
    with rasterio.open(out / "big__the-water.tif") as ds:
        assert ds.colormap(1)[1] == (255, 255, 255, 255) and ds.nodata == 255 and ds.crs.to_epsg() == 32631


def test_a_scene_of_one_tile_matches_a_single_tile_run(checkpoint, tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    scene = _geotiff(tmp_path / "small.tif", image)
    out = tmp_path / "out"
    assert _run(str(scene), "the water", "--model", str(checkpoint), "-d", str(out), "--threshold", "0.4") == 0
    expected = Predictor.from_pretrained(checkpoint).predict(image, "the water", threshold=0.4).mask
    np.testing.assert_array_equal(_read(out / "small__the-water.tif"), expected.astype(np.uint8))
    _, _, geometry, _ = pyogrio.raw.read(out / "small__the-water.gpkg")
    written = shapely.union_all(shapely.from_wkb(geometry))
    with rasterio.open(scene) as ds:
        reference = shapely.union_all(mask_to_polygons(expected, ds.transform))
    assert written.equals(reference) and written.area > 0


def test_torchrun_two_processes_write_what_one_does(tokenizer, tmp_path):
    """Three shared GeoTIFFs (4-band float UTM, uint16 with nodata, no CRS; 300-900 px) under
    `torchrun --nproc-per-node 2` (gloo, CPU) and in one process: the same masks, polygons and
    summary. (Most of the time is three interpreters importing torch, timm and transformers.)"""
    scenes = [
        str(shared_data("spacenet-sample", name)) for name in ("ms1.tif", "sample_geotiff.tif", "sample_fp_mask.tif")
    ]
    model = _save(tokenizer, tmp_path / "tiny-448", 448)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = ["-m", "sbanet.predict", *scenes, "-e", "all buildings", "--model", str(model), "-q", "--device", "cpu"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for name, prefix in (("one", [sys.executable]), ("two", launcher)):
        done = subprocess.run(
            [*prefix, *command, "-d", str(tmp_path / name)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = sorted((tmp_path / "one").iterdir()), sorted((tmp_path / "two").iterdir())
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 3 * 2 + 2
    for a, b in zip(one, two):
        if a.suffix == ".tif":
            np.testing.assert_array_equal(_read(a), _read(b))
        elif a.suffix == ".gpkg":  # geometries and attributes
            (_, _, geometry_a, fields_a), (_, _, geometry_b, fields_b) = pyogrio.raw.read(a), pyogrio.raw.read(b)
            assert geometry_a.tolist() == geometry_b.tolist()
            assert [f.tolist() for f in fields_a] == [f.tolist() for f in fields_b]
        else:
            assert a.read_text() == b.read_text()
