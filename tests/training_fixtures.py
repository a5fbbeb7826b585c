"""Small referring datasets for the trainer's tests: each image holds a red square and a blue
disc, and the expression says which one is meant, so the answer depends on the words."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from sbanet.data import ReferringDataset, ReferringSample

EXPRESSIONS = {"square": "the red square", "disc": "the blue circle"}


def toy_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``[size, size, 3] uint8`` grey field with a red square on one side and a blue disc on the other."""
    image = np.full((size, size, 3), 110, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    side, q = size // 4, size // 8
    left = bool(rng.random() < 0.5)
    sx = int(rng.integers(0, q)) if left else int(rng.integers(size // 2 + q, size - side))
    sy = int(rng.integers(0, size - side))
    square = (yy >= sy) & (yy < sy + side) & (xx >= sx) & (xx < sx + side)
    cx = int(rng.integers(size // 2 + side, size - q)) if left else int(rng.integers(q, size // 2 - side))
    cy = int(rng.integers(q, size - q))
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < q**2
    image[square] = (200, 30, 30)
    image[disc] = (30, 40, 200)
    return image, {"square": square, "disc": disc}


def toy_samples(n_images: int, size: int = 32, seed: int = 0, split: str = "train") -> list[ReferringSample]:
    """Two samples (square, disc) per image; categories are the object kinds."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_images):
        image, masks = toy_scene(rng, size)
        for name, mask in masks.items():
            samples.append(
                ReferringSample(
                    sample_id=f"toy/{seed}/{i}/{name}",
                    image_id=f"toy/{seed}/{i}",
                    expression=EXPRESSIONS[name],
                    split=split,
                    load_image=lambda image=image: image,
                    load_mask=lambda mask=mask: mask,
                    category=name,
                )
            )
    return samples


def toy_dataset(tokenizer, n_images: int, size: int = 32, seed: int = 0, image_size: int = 32) -> ReferringDataset:
    return ReferringDataset(toy_samples(n_images, size, seed), image_size, tokenizer, max_tokens=8)


def tiny32_dataset(tokenizer, samples: list[ReferringSample], augment: bool = False) -> ReferringDataset:
    """``samples`` at the ``tiny32`` fixture's input size (32 px) and token length (8)."""
    return ReferringDataset(samples, 32, tokenizer, max_tokens=8, augment=augment)


@contextmanager
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make small
    models 10x slower than one thread does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def toy_store(tmp_path, checkpoint, train_images: int):
    """A fresh SQLite store holding ``train_images`` toy images (seed 0) and 2 held-out ones
    (seed 1, split ``val``) as accepted masks, with ``checkpoint`` registered as the model "tiny";
    torch runs one thread inside."""
    from annotate import make_store
    from annotate.store import runs
    from annotate.store.transfer import import_samples

    store = make_store(f"sqlite:///{tmp_path / 'store.sqlite'}", tmp_path / "data")
    import_samples(store, toy_samples(train_images, seed=0) + toy_samples(2, seed=1, split="val"))
    with store.Session.begin() as session:
        runs.add_model_version(session, name="tiny", checkpoint=str(checkpoint), preset="sbanet_tiny")
    try:
        with single_thread():
            yield store
    finally:
        store.close()
