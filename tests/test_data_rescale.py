"""Scale augmentation: class-level items seen closer or farther, image and mask together."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_augment import _Tokenizer

from sbanet.data import ReferringDataset, ReferringSample
from sbanet.data.rescale import MIN_FACTOR, check_scale_range, draw_factor, mirror_mosaic, rescale
from train.fit_config import DataSection, load_config

FACTORS = (MIN_FACTOR, 0.5, 0.71, 1.0, 1.4, 2.0, 3.0)


def _blobs(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask of a few blobs and an image whose first channel is that mask (the rest noise)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy - 20) ** 2 + (xx - 40) ** 2 < 120) | ((yy > 44) & (xx < 24)) | ((xx - yy).abs() < 3)
    image = torch.randn(3, size, size, generator=torch.Generator().manual_seed(0))
    image[0] = mask.float() * 4.0 - 2.0
    return image, mask.long()


@pytest.mark.parametrize("factor", FACTORS)
def test_image_and_mask_move_together_and_the_inputs_are_kept(factor: float) -> None:
    image, mask = _blobs()
    before_image, before_mask = image.clone(), mask.clone()
    torch.manual_seed(1)
    out_image, out_mask = rescale(image, mask, factor)
    assert torch.equal(image, before_image) and torch.equal(mask, before_mask)  # the dataset caches them
    assert out_image.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == torch.long
    assert set(out_mask.unique().tolist()) <= {0, 1}
    # where the image's first channel says "mask", the mask says so too (edges may differ by a pixel)
    agree = ((out_image[0] > 0).long() == out_mask).float().mean()
    assert agree > 0.95, (factor, float(agree))


def test_closer_enlarges_a_crop_and_farther_shrinks_into_a_mirror_mosaic() -> None:
    image, mask = _blobs()
    torch.manual_seed(0)
    _, closer = rescale(image, mask, 2.0)
    # a 32 x 32 window of the mask, each pixel now 2 x 2
    windows = [
        mask[y : y + 32, x : x + 32].repeat_interleave(2, 0).repeat_interleave(2, 1)
        for y in range(33)
        for x in range(33)
    ]
    assert any(torch.equal(closer, w) for w in windows)
    small = torch.zeros(64, 64, dtype=torch.long)
    small[:8, :8] = 1  # a square in the top-left corner, 1/64 of the image
    torch.manual_seed(0)
    _, farther = rescale(torch.zeros(3, 64, 64), small, 0.5)
    # shrunk to 32 x 32, a 4 x 4 square: the mosaic mirrors it onto the tiles' shared corners, so a
    # 64 x 64 window holds whole squares of 4 x 4 (or merged 8 x 8 ones at a mirror line)
    assert 0 < int(farther.sum()) <= 4 * 64
    assert int(farther.sum()) % 16 == 0


def test_a_class_everywhere_and_an_absent_class_stay_so_at_every_scale() -> None:
    everywhere, nowhere = torch.ones(48, 48, dtype=torch.long), torch.zeros(48, 48, dtype=torch.long)
    for factor in FACTORS:
        assert rescale(torch.zeros(3, 48, 48), everywhere, factor)[1].all()
        assert not rescale(torch.zeros(3, 48, 48), nowhere, factor)[1].any()


def test_the_mosaic_mirrors_each_edge_onto_its_neighbour() -> None:
    x = torch.arange(6.0).view(2, 3)
    mosaic = mirror_mosaic(x)
    assert mosaic.shape == (6, 9)
    assert torch.equal(mosaic[2:4, 3:6], x)
    assert torch.equal(mosaic[2:4, 2], x[:, 0]) and torch.equal(mosaic[2:4, 6], x[:, 2])  # edges meet their mirror
    assert torch.equal(mosaic[1, 3:6], x[0]) and torch.equal(mosaic[4, 3:6], x[1])


def test_factors_are_log_uniform_and_bad_ranges_are_refused() -> None:
    torch.manual_seed(0)
    factors = np.array([draw_factor(0.5, 2.0) for _ in range(4000)])
    assert factors.min() >= 0.5 and factors.max() <= 2.0
    assert abs(float(np.mean(factors > 1.0)) - 0.5) < 0.03  # as many closer as farther
    assert check_scale_range(None) is None and check_scale_range([0.5, 2]) == (0.5, 2.0)
    for bad in ([2.0, 1.0], [0.2, 2.0], [0.5], [0.0, 1.0]):
        with pytest.raises(ValueError):
            check_scale_range(bad)
        with pytest.raises(ValueError):
            DataSection(kind="folder", root="x", scale=bad)
    with pytest.raises(ValueError):
        rescale(torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long), 0.2)
    with pytest.raises(ValueError):
        rescale(torch.zeros(3, 8, 8), torch.zeros(4, 4, dtype=torch.long), 1.5)


def _sample(rule: str | None, expression: str) -> ReferringSample:
    image = np.zeros((32, 32, 3), np.uint8)
    image[:8, :8] = 255
    mask = np.zeros((32, 32), bool)
    mask[:8, :8] = True
    return ReferringSample(rule or "none", rule or "none", expression, "train", lambda: image, lambda: mask, rule=rule)


def test_the_dataset_rescales_class_and_absent_items_only() -> None:
    samples = [
        _sample("class", "the buildings"),
        _sample("absent", "the water"),
        _sample("extreme", "the topmost building"),
        _sample(None, "a building"),
    ]
    tokenizer = _Tokenizer()
    plain = ReferringDataset(samples, 32, tokenizer, max_tokens=8)
    data = ReferringDataset(samples, 32, tokenizer, max_tokens=8, scale=(0.5, 2.0))
    torch.manual_seed(0)
    changed = [sum(not torch.equal(data[i]["mask"], plain[i]["mask"]) for _ in range(12)) for i in range(4)]
    assert changed[0] >= 10 and changed[1] >= 10  # a factor of exactly 1 is as good as never drawn
    assert changed[2] == 0 and changed[3] == 0  # a crop would change which building is the topmost


def test_the_scale_recipe_reads_its_range_and_changes_nothing_else() -> None:
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    scaled, plain = load_config(configs / "v5_scale.yaml", []), load_config(configs / "v5_cpu4.yaml", [])
    assert scaled.data.scale == [0.5, 2.0] and plain.data.scale is None
    assert dataclasses.replace(scaled.data, scale=None) == plain.data  # the ablation's one change
    assert scaled.train == plain.train and scaled.model == plain.model
