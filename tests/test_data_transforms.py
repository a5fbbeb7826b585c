"""The paper's transforms and the torch dataset the trainer consumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sbanet.config import IMAGENET_MEAN, IMAGENET_STD
from sbanet.data import ReferringDataset, ReferringSample, resize_image, resize_mask


class _Counter:
    """Picklable image loader that counts its calls (per process)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.image


def _samples():
    rng = np.random.default_rng(0)
    images = {
        "a": _Counter(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)),
        "b": _Counter(rng.integers(0, 65535, (30, 30), dtype=np.uint16)),  # 16-bit gray: to_rgb8
    }
    left = np.zeros((40, 60), bool)
    left[:, :30] = True
    samples = [
        ReferringSample("s0", "a", "the left half", "train", images["a"], lambda: left, "half"),
        ReferringSample("s1", "a", "the right half", "train", images["a"], lambda: ~left, "half"),
        ReferringSample("s2", "b", "nothing", "train", images["b"], lambda: np.zeros((30, 30), bool)),
    ]
    return samples, images


def test_items_have_the_trainer_keys_shapes_and_dtypes(tokenizer):
    samples, _ = _samples()
    dataset = ReferringDataset(samples, 32, tokenizer, max_tokens=12)
    assert len(dataset) == 3
    for i in range(3):
        item = dataset[i]
        assert set(item) == {"image", "mask", "input_ids", "attention_mask", "index"}
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
        assert set(item["mask"].unique().tolist()) <= {0, 1}
        assert item["input_ids"].shape == item["attention_mask"].shape == (12,)
        assert item["input_ids"].dtype == item["attention_mask"].dtype == torch.int64
        assert item["index"] == i
    first = dataset[0]
    assert first["mask"][:, :16].all() and not first["mask"][:, 16:].any()
    assert dataset[1]["mask"].sum() == 32 * 16 and dataset[2]["mask"].sum() == 0
    n_tokens = int(first["attention_mask"].sum())
    words = tokenizer.convert_ids_to_tokens(first["input_ids"][:n_tokens].tolist())
    assert words == ["[CLS]", "the", "left", "half", "[SEP]"]
    assert (first["input_ids"][n_tokens:] == tokenizer.pad_token_id).all()


def test_normalisation_and_resize_match_the_paper():
    image = np.zeros((10, 20, 3), np.uint8)
    image[...] = (255, 128, 0)
    x = resize_image(image, 16)
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    samples = [ReferringSample("s", "i", "x", "train", lambda: image, lambda: np.ones((10, 20), bool))]
    dataset = ReferringDataset(samples, 16, _FakeTokenizer(), max_tokens=4)
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(dataset[0]["image"][:, 5, 5], expected)
    # bilinear + antialias is what PIL's bilinear resize gives when shrinking (LAVT's transform)
    photo = np.random.default_rng(3).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(photo).resize((32, 32), Image.BILINEAR), np.float32) / 255
    ours = resize_image(photo, 32).permute(1, 2, 0).numpy()
    assert np.abs(ours - pil).mean() < 2 / 255


def test_mask_resize_is_nearest_at_pixel_centres():
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    np.testing.assert_array_equal(
        resize_mask(mask, 8).numpy(), np.kron(mask, np.ones((2, 2), np.int64))
    )  # exact upsampling
    big = np.zeros((9, 9), bool)
    big[4, 4] = True  # the centre pixel of 9 -> the centre of 3 (PIL's NEAREST)
    assert resize_mask(big, 3).numpy().tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


class _FakeTokenizer:
    """Only what ``tokenize`` needs: a callable returning ``input_ids`` / ``attention_mask``."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        n = len(texts)
        return {"input_ids": torch.ones(n, max_length, dtype=torch.long), "attention_mask": torch.ones(n, max_length)}


def test_images_are_decoded_once_per_image_while_cached():
    samples, images = _samples()
    dataset = ReferringDataset(samples, 16, _FakeTokenizer(), max_tokens=4, cache_size=1)
    for i in (0, 1, 0, 1):
        dataset[i]
    assert images["a"].calls == 1
    dataset[2]  # evicts "a"
    dataset[0]
    assert images["a"].calls == 2 and images["b"].calls == 1
    uncached = ReferringDataset(samples, 16, _FakeTokenizer(), max_tokens=4, cache_size=0)
    uncached[0]
    uncached[1]
    assert images["a"].calls == 4


def test_dataloader_with_a_worker_and_default_collate(tokenizer):
    samples, _ = _samples()
    dataset = ReferringDataset(samples, 32, tokenizer, max_tokens=8)
    loader = DataLoader(dataset, batch_size=2, num_workers=1, shuffle=False)
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2]]
    assert batches[0]["image"].shape == (2, 3, 32, 32) and batches[0]["mask"].shape == (2, 32, 32)
    torch.testing.assert_close(batches[0]["image"][0], dataset[0]["image"])


def test_bad_arguments(tokenizer):
    samples, _ = _samples()
    with pytest.raises(ValueError, match="max_tokens"):
        ReferringDataset(samples, 32, tokenizer, max_tokens=2)
    with pytest.raises(IndexError):
        ReferringDataset(samples, 32, tokenizer)[3]
    empty = ReferringDataset([], 32, tokenizer)
    assert len(empty) == 0 and empty.input_ids.shape == (0, 20)


def test_dataset_images_match_the_predictor(tiny_model, tokenizer):
    """Training sees exactly what inference sees (same resize and normalisation)."""
    from sbanet.inference.predictor import Predictor

    predictor = Predictor(tiny_model, tokenizer)
    config = predictor.config
    image = np.random.default_rng(4).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    expected, _ = predictor.preprocess(image)
    sample = ReferringSample("s", "i", "the roof", "test", lambda: image, lambda: np.zeros((50, 70), bool))
    dataset = ReferringDataset(
        [sample], config.image_size, tokenizer, config.max_tokens, config.pixel_mean, config.pixel_std
    )
    torch.testing.assert_close(dataset[0]["image"], expected[0])
