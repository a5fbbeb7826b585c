"""Ground sampling distance: the checkpoint's training GSD, a raster's GSD, resampling to it in the
predictor, the scene tiles and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data

from recipes.default_model.gsd_sources import recipe_gsd
from sbanet.checkpoint import save_pretrained
from sbanet.geo.raster import GeoInfo, geo_metadata
from sbanet.geo.resolution import metres_per_degree, raster_gsd
from sbanet.geo.tiling import predict_scene, scaled_tile
from sbanet.inference.gsd import SourceGSD, TrainingGSD, as_pair, check_gsd, plan_scale
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import SHIPPED_MODEL
from sbanet.predict import main

TRAINING = TrainingGSD(2.0, "test", {"test": SourceGSD(1.0, 0.8, 1.2, "made up")})


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "abc", None, True, 1e6, "0.001"])
def test_a_bad_gsd_is_a_value_error(bad):
    with pytest.raises(ValueError, match="metres per pixel"):
        check_gsd(bad)


def test_gsd_numbers_and_pairs():
    assert check_gsd("0.5") == 0.5
    assert as_pair(0.3) == (0.3, 0.3)
    assert as_pair((0.3, 0.24)) == (0.3, 0.24)
    with pytest.raises(ValueError):
        as_pair((0.3, 0.2, 0.1))


def test_the_plan_resamples_to_the_training_scale():
    plan = plan_scale((900, 600), 0.5, TRAINING)  # 0.5 m -> 2 m per model pixel: a quarter
    assert plan.factor == (0.25, 0.25)
    assert plan.resampled == (225, 150)
    assert plan.tile(320) == (1280, 1280)  # one 320 px model tile covers 1280 source pixels
    assert plan.describe() == "image 0.50 m/px, model 2.00 m/px: resampled x0.25 (900x600 -> 225x150)"
    rows_cols = plan_scale((100, 100), (1.0, 0.5), TRAINING)
    assert rows_cols.resampled == (50, 25) and "1.00 x 0.50" in rows_cols.describe()


def test_metadata_round_trip_and_old_checkpoints():
    block = TRAINING.to_metadata()
    assert TrainingGSD.from_metadata(json.loads(json.dumps({"gsd": block}))) == TRAINING
    assert TrainingGSD.from_metadata({}) is None  # checkpoints written before the block
    assert TrainingGSD.from_metadata({"gsd": {"sources": {}}}) is None


def test_a_mixed_source_recipe_records_each_scale_and_resamples_to_the_finest(tmp_path):
    """A recipe on dubai-aerial and gid-mtl conversions: each source's median scale per model
    pixel in the block's reasons, the finer one (Dubai's, ~1.7 m at 320 px) as the target; a
    folder of an unknown source gives no block."""
    shared_data("dubai-aerial")  # skips with its reason when the shared data is absent
    gid = tmp_path / "gid-referring-asked" / "gid5"
    gid.mkdir(parents=True)
    rows = [{"image": f"g{i}", "box": [0, 224, 0, 224]} for i in range(3)] + [{"image": "g0", "box": [0, 224, 0, 224]}]
    (gid / "samples_train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = {
        "model": {"overrides": {"image_size": 320}},
        "data": {
            "root": "runs/data/dubai-referring-asked",
            "mix": [{"root": "runs/data/dubai-referring-whole"}, {"root": str(gid)}],
        },
    }
    block = recipe_gsd(recipe)
    training = TrainingGSD.from_metadata({"gsd": block})
    assert set(training.sources) == {"dubai-aerial", "gid-mtl"}
    dubai_only = recipe_gsd(
        {
            **recipe,
            "data": {"root": "runs/data/dubai-referring-asked", "mix": [{"root": "runs/data/dubai-referring-whole"}]},
        }
    )
    assert training.input_m_per_px == dubai_only["input_m_per_px"] < 4.0 * 224 / 320
    assert "gid-mtl 2.80 m (median of 3 training" in training.how and "finest (dubai-aerial)" in training.how
    assert recipe_gsd({**recipe, "data": {"root": "runs/data/spacenet-buildings", "mix": []}}) is None


def test_the_shipped_model_records_each_sources_gsd_and_resamples_to_dubais():
    metadata = json.loads((SHIPPED_MODEL / "config.json").read_text())["metadata"]
    training = TrainingGSD.from_metadata(metadata)
    dubai, gid = training.sources["dubai-aerial"], training.sources["gid-mtl"]
    assert dubai.low < dubai.m_per_px < dubai.high and "MBRSC" in dubai.how and "Gaofen-2" in gid.how
    assert dubai.m_per_px * 1.4 < training.input_m_per_px < dubai.m_per_px * 2.5  # ~512-1126 px seen at 320
    assert "gid-mtl 2.80 m" in training.how and "finest (dubai-aerial)" in training.how


def test_the_predictor_resamples_and_returns_the_original_size(tiny_model, tokenizer):
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    plain = Predictor(tiny_model, tokenizer, fast=False)
    before = plain.predict(image, "the water", return_attention=False)
    assert before.scale is None
    with pytest.raises(ValueError, match="records no training GSD"):
        plain.predict(image, "the water", gsd=0.5)
    scaled = Predictor(tiny_model, tokenizer, fast=False, training_gsd=TRAINING)
    same = scaled.predict(image, "the water", return_attention=False)
    np.testing.assert_array_equal(same.probability, before.probability)  # no GSD: as before
    after = scaled.predict(image, "the water", gsd=0.5)  # -> 23 x 33 model pixels, padded to 32 x 64
    assert after.mask.shape == (90, 130) and after.probability.shape == (90, 130)
    assert "resampled x0.25 (90x130 -> 22x32)" in after.scale
    assert not np.allclose(after.probability, before.probability)
    with pytest.raises(ValueError, match="metres per pixel"):
        scaled.predict(image, "the water", gsd=-2)
    with pytest.raises(ValueError, match="segment it as a scene"):
        scaled.predict(image, "the water", gsd=100.0)  # 4500 x 6500 model pixels


def test_from_pretrained_reads_the_block_and_old_checkpoints_load_as_before(tiny_model, tokenizer, tmp_path):
    old = save_pretrained(tiny_model, tmp_path / "old", tokenizer=tokenizer, metadata={"version": "t"})
    new = save_pretrained(tiny_model, tmp_path / "new", tokenizer=tokenizer, metadata={"gsd": TRAINING.to_metadata()})
    assert Predictor.from_pretrained(old).training_gsd is None
    assert Predictor.from_pretrained(new).training_gsd == TRAINING


def test_scene_tiles_at_the_training_gsd(tiny_model, tokenizer):
    scene = np.random.default_rng(1).integers(0, 255, (150, 230, 3), dtype=np.uint8)
    predictor = Predictor(tiny_model, tokenizer, fast=False, training_gsd=TRAINING)
    size = tiny_model.config.image_size
    tile, note = scaled_tile(predictor, 150, 230, 2.0 * size / 64)  # one model tile = 64 source pixels
    assert tile == (64, 64) and "tiles of 64x64" in note
    masks = predict_scene(predictor, scene, ["the roads"], tile=tile).mask
    assert masks.shape == (1, 150, 230)
    big, _ = scaled_tile(predictor, 150, 230, 2.0 * size / 400)  # a scene smaller than one tile: padded
    assert big == (400, 400)
    assert predict_scene(predictor, scene, ["the roads"], tile=big).mask.shape == (1, 150, 230)
    with pytest.raises(ValueError, match="records no training GSD"):
        scaled_tile(Predictor(tiny_model, tokenizer, fast=False), 150, 230, 0.5)


def test_a_projected_geotiff_states_its_gsd():
    reading = raster_gsd(geo_metadata(shared_data("spacenet-sample", "sample_geotiff.tif")))
    assert reading.gsd == (0.5, 0.5) and "EPSG:32616" in reading.reason


def test_a_geographic_geotiff_converts_degrees_at_its_latitude():
    reading = raster_gsd(geo_metadata(shared_data("spacenet-sample", "road_mask_input.tif")))
    gy, gx = reading.gsd  # 2.7e-6 degrees at latitude 36.14
    assert gy == pytest.approx(0.2997, abs=0.001) and gx == pytest.approx(0.2428, abs=0.001)
    assert "degrees" in reading.reason


def test_a_raster_without_a_crs_states_none():
    reading = raster_gsd(geo_metadata(shared_data("spacenet-sample", "sample_fp_mask.tif")))
    assert reading.gsd is None and "no CRS" in reading.reason


def test_feet_and_degrees_convert_to_metres():
    feet = GeoInfo(10, 10, 1, "uint8", "EPSG:2263", (2.0, 0.0, 1e6, 0.0, -2.0, 2e5))  # NY State Plane, US ft
    assert raster_gsd(feet).gsd == pytest.approx((0.6096, 0.6096), rel=1e-4)
    lat, lon = metres_per_degree(0.0)
    assert lat == pytest.approx(110574, abs=2) and lon == pytest.approx(111320, abs=2)
    assert metres_per_degree(60.0)[1] == pytest.approx(55800, rel=2e-3)
    equator = GeoInfo(10, 10, 1, "uint8", "EPSG:4326", (1e-5, 0.0, 10.0, 0.0, -1e-5, 0.00005))
    gy, gx = raster_gsd(equator).gsd
    assert gy == pytest.approx(1.10574, rel=1e-4) and gx == pytest.approx(1.11320, rel=1e-4)
    nowhere = GeoInfo(10, 10, 1, "uint8", "EPSG:4326", (1.0, 0.0, 0.0, 0.0, -1.0, 500.0))
    assert raster_gsd(nowhere).gsd is None  # a latitude of 495: cannot say


@pytest.fixture(scope="module")
def gsd_checkpoint(tmp_path_factory, tokenizer):
    from sbanet import sbanet_tiny

    path = tmp_path_factory.mktemp("ckpt") / "tiny-gsd"
    metadata = {"gsd": TrainingGSD(1.6, "test").to_metadata()}
    return save_pretrained(sbanet_tiny(image_size=64).eval(), path, tokenizer=tokenizer, metadata=metadata)


def test_the_command_resamples_a_geotiff_and_can_be_told_not_to(gsd_checkpoint, tmp_path, capsys):
    scene = shared_data("spacenet-sample", "sample_geotiff.tif")
    base = [str(scene), "all buildings", "--model", str(gsd_checkpoint), "-q", "--overwrite"]
    assert main([*base, "-o", str(tmp_path / "a.tif")]) == 0
    printed = capsys.readouterr().out
    assert "image 0.50 m/px, model 1.60 m/px" in printed and "tiles of 205x205" in printed
    assert main([*base, "-o", str(tmp_path / "b.tif"), "--no-gsd"]) == 0
    assert "resampling to the training GSD is off" in capsys.readouterr().out
    assert main([*base, "-o", str(tmp_path / "c.tif"), "--gsd", "0.8"]) == 0
    assert "image 0.80 m/px" in capsys.readouterr().out


def test_a_plain_image_runs_whole_as_in_the_app_and_a_larger_one_is_tiled(gsd_checkpoint, tmp_path, capsys):
    from PIL import Image

    image = np.random.default_rng(3).integers(0, 255, (150, 230, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    base = [str(tmp_path / "image.png"), "the roads", "--model", str(gsd_checkpoint), "-q"]
    assert main([*base, "-o", str(tmp_path / "whole.png")]) == 0
    printed = capsys.readouterr().out
    assert "states no GSD" in printed and "whole image resized to the input size" in printed
    expected = Predictor.from_pretrained(gsd_checkpoint).predict(image, "the roads").mask  # what the app shows
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "whole.png")) == 255, expected)
    assert main([*base, "-o", str(tmp_path / "tiled.png"), "--whole-max", "200"]) == 0
    assert "over 200 px: tiled at its own pixel size" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "tiled.png")).shape == (150, 230)
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "-o", str(tmp_path / "bad.png"), "--whole-max", "-1"])
    assert exit_info.value.code == 2 and "0 or more pixels" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [(["--gsd", "0"], "--gsd must be between"), (["--gsd", "x"], "--gsd must be a number"),
     (["--gsd", "1", "--no-gsd"], "not allowed with argument")],
)  # fmt: skip
def test_a_bad_gsd_flag_is_one_clear_line(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["image.png", "x", "-o", str(tmp_path / "m.png"), "--preset", "sbanet_tiny", *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_gsd_for_a_model_without_one_is_refused(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "image.png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "image.png"), "x", "-o", str(tmp_path / "m.png"), "--preset", "sbanet_tiny", "--gsd", "1"])
    assert exit_info.value.code == 2 and "records no training GSD" in capsys.readouterr().err
    assert main([str(tmp_path / "image.png"), "x", "-o", str(tmp_path / "n.png"), "--preset", "sbanet_tiny", "-q"]) == 0
    assert "records no training GSD" in capsys.readouterr().out


def test_case_means_summarises_and_prints_each_case(capsys):
    from recipes.default_model.scale import case_means

    rows = {"tile6: the water": {"chance": [0.2, 0.4], "iou": {"off": [0.5, 1.0], "on": [0.25, 0.75]}}}
    out = case_means(rows, ["off", "on"])
    assert out == {"tile6: the water": {"n": 2, "chance": pytest.approx(0.3), "mean_iou": {"off": 0.75, "on": 0.5}}}
    assert "0.750" in capsys.readouterr().out
    kept = case_means(rows, ["off", "on"], widths=(28, 4, 10), keep_iou=True)
    assert kept["tile6: the water"]["iou"] == rows["tile6: the water"]["iou"]
