"""Sliding-window inference: the tile grid, the blend weights, agreement with single-tile runs, no seams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import torch
from numerics import assert_within_drift
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter

from sbanet import sbanet_tiny
from sbanet.geo.tiling import blend_ramp, predict_scene, tile_grid, tile_starts, tile_weight
from sbanet.geo.writers import ArrayWriter, TeeWriter
from sbanet.inference.predictor import Predictor

SIZE = 96  # a tiny model at a small input size keeps these tests fast
OVERLAP = 32
SCENE = 160  # 2 x 2 tiles of 96 starting at 0 and 64, sharing 32 pixels
START = SCENE - SIZE


class FloatWriter:
    """Keeps the float probabilities and records the bands of rows it receives."""

    def __init__(self, count: int, height: int, width: int) -> None:
        self.probability = np.full((count, height, width), np.nan, np.float32)
        self.bands: list[tuple[int, int]] = []
        self.closed = False

    def write(self, row, probability, valid):
        self.probability[:, row : row + probability.shape[1]] = probability
        self.bands.append((row, probability.shape[1]))

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def predictor(tokenizer):
    torch.manual_seed(0)
    return Predictor(sbanet_tiny(image_size=SIZE).eval(), tokenizer, precision="fp32")  # compared at 1e-5


@pytest.fixture(scope="module")
def scene():
    """A smooth synthetic scene of 2 x 2 tiles."""
    rng = np.random.default_rng(0)
    noise = gaussian_filter(rng.random((SCENE, SCENE, 3)), (4, 4, 0))
    return np.clip((noise - 0.5) * 8 * 255 + 128, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def blended(predictor, scene):
    writer = FloatWriter(1, *scene.shape[:2])
    calls = []
    predict_scene(predictor, scene, ["the water"], overlap=OVERLAP, writer=writer, callback=lambda *a: calls.append(a))
    return writer, calls


@pytest.fixture(scope="module")
def tile_predictions(predictor, scene):
    """Each tile run alone through the predictor: ``{(row, col): float32 [SIZE, SIZE]}``."""
    out = {}
    for row in tile_grid(*scene.shape[:2], SIZE, OVERLAP):
        for t in row:
            window = scene[t.row : t.row + t.height, t.col : t.col + t.width]
            out[(t.row, t.col)] = predictor.predict(window, "the water", return_attention=False).probability
    return out


@pytest.mark.parametrize(("length", "overlap"), [(50, 24), (96, 24), (130, 24), (160, 32), (900, 24), (4000, 40)])
def test_tiles_cover_the_scene_with_at_least_the_overlap(length, overlap):
    starts = tile_starts(length, SIZE, overlap)
    extent = min(SIZE, length)
    assert starts[0] == 0 and starts[-1] + extent == length
    shared = [a + extent - b for a, b in itertools.pairwise(starts)]
    assert all(s >= overlap for s in shared)
    if len(starts) > 2:  # the fewest tiles: one less would not keep the overlap
        assert (length - SIZE) / (len(starts) - 2) > SIZE - overlap


def test_blend_weights_are_a_partition_of_unity():
    assert blend_ramp(10, 0, 0).tolist() == [1.0] * 10
    rise, fall = blend_ramp(SIZE, OVERLAP, 0)[:OVERLAP], blend_ramp(SIZE, 0, OVERLAP)[-OVERLAP:]
    np.testing.assert_allclose(rise + fall, 1.0, atol=1e-6)
    assert rise.min() > 0 and np.all(np.diff(rise) > 0)
    grid = tile_grid(SCENE, SCENE, SIZE, OVERLAP)
    total = np.zeros((SCENE, SCENE))
    for row in grid:
        for t in row:
            total[t.row : t.row + t.height, t.col : t.col + t.width] += tile_weight(t)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(400, 400, SIZE, SIZE)


@pytest.mark.numerics
@pytest.mark.parametrize("shape", [(80, 96, 3), (61, 41, 4)])
def test_a_scene_that_fits_in_one_tile_matches_the_predictor(predictor, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 65535, shape, dtype=np.uint16)
    texts = ["the water", "all buildings"]
    exact, in_memory = FloatWriter(2, *shape[:2]), ArrayWriter(2, *shape[:2])
    predict_scene(predictor, image, texts, writer=TeeWriter(exact, in_memory))
    for k, single in enumerate(predictor.predict_batch(image, texts, return_attention=False)):
        assert_within_drift(exact.probability[k], single.probability, atol=1e-5, check="scene vs predictor")
        np.testing.assert_array_equal(in_memory.mask[k], single.mask)
        np.testing.assert_allclose(in_memory.probability[k] / 255.0, single.probability, atol=0.5 / 255 + 1e-6)


@pytest.mark.numerics
def test_tiles_agree_with_single_tile_runs_and_blend_between_them(blended, tile_predictions):
    writer, calls = blended
    p = writer.probability[0]
    assert not np.isnan(p).any() and writer.closed
    assert calls == [(2, 4), (4, 4)]  # one callback per batch of tiles (one row of tiles here)
    assert writer.bands == [(0, START), (START, SIZE)]  # rows handed on once no tile touches them
    # seen by one tile only: exactly that tile's probability
    assert_within_drift(p[:START, :START], tile_predictions[(0, 0)][:START, :START], atol=1e-5, check="one tile")
    assert_within_drift(
        p[SIZE:, SIZE:], tile_predictions[(START, START)][OVERLAP:, OVERLAP:], atol=1e-5, check="last tile"
    )
    # between two tiles (rows no other tile sees): their sin^2-weighted mean
    a, b = tile_predictions[(0, 0)][:START, START:], tile_predictions[(0, START)][:START, :OVERLAP]
    w = blend_ramp(SIZE, 0, OVERLAP)[-OVERLAP:]
    assert_within_drift(p[:START, START:SIZE], w * a + (1 - w) * b, atol=1e-5, check="blend")
    # where four tiles meet: between the lowest and the highest of them
    corner = np.stack(
        [
            tile_predictions[(0, 0)][START:, START:],
            tile_predictions[(0, START)][START:, :OVERLAP],
            tile_predictions[(START, 0)][:OVERLAP, START:],
            tile_predictions[(START, START)][:OVERLAP, :OVERLAP],
        ]
    )
    middle = p[START:SIZE, START:SIZE]
    assert np.all(middle >= corner.min(0) - 1e-6) and np.all(middle <= corner.max(0) + 1e-6)


def test_no_seam_where_tiles_meet(blended, tile_predictions):
    """Across every tile border the blended map changes no more than the tile that spans the
    border does there (plus a trace of the ramp's first weight), while pasting the same tiles
    one over the other jumps by their disagreement."""
    p = blended[0].probability[0]

    def jump(image, column):  # mean |change| from one column to the next, in rows only 2 tiles see
        return float(np.abs(image[:START, column + 1] - image[:START, column]).mean())

    last = SIZE - 1  # the first tile's last column; the second tile starts at START
    for first, second, blend in [
        (tile_predictions[(0, 0)], tile_predictions[(0, START)], p),  # left | right
        (tile_predictions[(0, 0)].T, tile_predictions[(START, 0)].T, p.T),  # top / bottom
    ]:
        disagreement = float(np.abs(first[:START, START:] - second[:START, :OVERLAP]).mean())
        assert disagreement > 1e-3  # the tiles differ: context changes the model's output
        assert jump(blend, START - 1) <= jump(first, START - 1) + 0.02 * disagreement
        assert jump(blend, last) <= jump(second, last - START) + 0.02 * disagreement
        pasted = np.concatenate([first[:, :START], second], axis=1)  # each tile over the previous one
        assert jump(pasted, START - 1) > jump(first, START - 1) + 0.2 * disagreement  # the seam avoided


def test_geotiff_scene_by_windows_matches_the_array(predictor, scene, blended, tmp_path):
    path = tmp_path / "scene.tif"
    profile = dict(driver="GTiff", width=SCENE, height=SCENE, count=3, dtype="uint8", crs="EPSG:32616")
    with rasterio.open(path, "w", transform=Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0), **profile) as dst:
        dst.write(np.moveaxis(scene, -1, 0))
    writer = predict_scene(predictor, path, ["the water"], overlap=OVERLAP, writer=FloatWriter(1, SCENE, SCENE))
    np.testing.assert_allclose(writer.probability, blended[0].probability, atol=1e-6)


def test_nodata_tiles_are_skipped_and_masked(predictor, monkeypatch):
    image = np.full((250, 250, 3), np.nan, np.float32)  # 4 x 4 tiles, 15 of them all nodata
    image[:40, :40] = np.random.default_rng(3).random((40, 40, 3))
    encoded, encode = [], predictor.model.encode_image_prefix
    monkeypatch.setattr(predictor.model, "encode_image_prefix", lambda x: encoded.append(len(x)) or encode(x))
    result = predict_scene(predictor, image, ["the water"], overlap=OVERLAP, threshold=0.01)
    assert encoded == [1]  # the model saw the one tile with data
    assert result.valid[:40, :40].all() and not result.valid[40:, 40:].any()
    assert result.mask[0][:40, :40].all() and not result.mask[0][~result.valid].any()
    assert (result.probability[0][~result.valid] == 0).all()


def test_bad_arguments(predictor, scene):
    with pytest.raises(ValueError, match="list of strings"):
        predict_scene(predictor, scene, "the water")
    with pytest.raises(ValueError, match="empty"):
        predict_scene(predictor, scene, ["  "])
    with pytest.raises(ValueError, match="overlap"):
        predict_scene(predictor, scene, ["the water"], overlap=-1)
    with pytest.raises(ValueError, match="batch_size"):
        predict_scene(predictor, scene, ["the water"], batch_size=0)
    with pytest.raises(ValueError, match="threshold"):
        ArrayWriter(1, 4, 4, threshold=1.5)
