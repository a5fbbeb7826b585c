"""Targets read and resized exactly as the reference code (LAVT / RMSIN / the RefSegRS loader) does,
and overlays for images whose size differs from their mask's."""

from __future__ import annotations

import cv2
import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from sbanet.data import ReferringDataset, ReferringSample, resize_mask
from sbanet.data.refsegrs import read_binary_mask
from sbanet.data.rrsisd import decode_segmentation
from train.evaluate import image_on_mask_grid, save_overlays


def test_mask_resize_is_pil_nearest_bit_for_bit():
    rows = np.tile((np.arange(512) % 2).astype(bool)[:, None], (1, 512))  # each row says which it is
    ours = resize_mask(rows, 448).numpy()
    pil = np.asarray(Image.fromarray(rows.astype(np.uint8)).resize((448, 448), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(ours, pil)
    # torch's nearest-exact breaks the 512 -> 448 ties the other way on 28 rows
    exact = F.interpolate(torch.from_numpy(rows.astype(np.float32))[None, None], size=(448, 448), mode="nearest-exact")
    assert int((exact[0, 0, :, 0].numpy() != pil[:, 0]).sum()) == 28
    blobs = np.random.default_rng(0).random((300, 500)) > 0.6
    for size in (448, 480, 123):
        expected = np.asarray(Image.fromarray(blobs.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(resize_mask(blobs, size).numpy(), expected)


def test_three_band_refsegrs_masks_are_weighted_grey_like_cv2(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = (0, 0, 200), (255, 0, 0)  # max band 200 > 50 but grey 23; grey 76
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    ours = read_binary_mask(path)
    np.testing.assert_array_equal(ours, cv2.imread(str(path), 2) > 50)
    assert not ours[0, 0] and ours[0, 1]
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "grey.tif"), grey > 50)


def test_overlapping_rle_parts_keep_the_pixels_covered_once():
    a, b = np.zeros((30, 40), np.uint8), np.zeros((30, 40), np.uint8)
    a[5:20, 5:25], b[10:25, 15:35] = 1, 1
    parts = [mask_utils.encode(np.asfortranarray(m)) for m in (a, b)]
    mask = decode_segmentation([{"size": p["size"], "counts": p["counts"].decode()} for p in parts])
    np.testing.assert_array_equal(mask, (a.astype(int) + b) == 1)
    assert not mask[12, 20] and mask[6, 6] and mask[24, 34]  # the overlap is background, as in refer.py


def test_overlays_for_an_image_whose_size_differs_from_its_mask(tmp_path, tiny_model, tokenizer):
    target = np.zeros((50, 50), bool)
    target[10:30, 10:40] = True
    sample = ReferringSample(
        "s/1", "s/1", "the field", "test", lambda: np.full((60, 80, 3), 90, np.uint8), lambda: target
    )
    dataset = ReferringDataset([sample], 64, tokenizer, 12)
    save_overlays(tiny_model, dataset, [("worst-0", 0, 0.1)], tmp_path)
    with Image.open(tmp_path / "worst-0.png") as panel:
        assert panel.width == 50
    assert image_on_mask_grid(np.zeros((60, 80, 3), np.uint8), (50, 50)).shape == (50, 50, 3)
