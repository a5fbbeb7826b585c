"""Samples and datasets for the command lines, from a dataset kind, root and split."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sbanet.config import SBANetConfig
from sbanet.data import ReferringDataset, ReferringSample, load_samples


def blind(samples: list[ReferringSample]) -> list[ReferringSample]:
    """The text-blind baseline: every expression replaced by ``""`` (the model sees [CLS] [SEP])."""
    return [dataclasses.replace(s, expression="") for s in samples]


def make_dataset(
    kind: str,
    root: str | Path | None,
    split: str,
    config: SBANetConfig,
    tokenizer: Any,
    options: dict[str, Any] | None = None,
    blind_text: bool = False,
    limit: int | None = None,
) -> ReferringDataset:
    """``load_samples(kind, root, split, **options)``, optionally text-blind and cut to the first
    ``limit`` samples, as a :class:`ReferringDataset` at the model's input size and token length."""
    samples = load_samples(kind, root, split, **(options or {}))
    if not samples:
        raise ValueError(f"the {split!r} split of {kind} dataset at {root} has no samples")
    if limit is not None:
        samples = samples[:limit]
    if blind_text:
        samples = blind(samples)
    return ReferringDataset(
        samples, config.image_size, tokenizer, config.max_tokens, mean=config.pixel_mean, std=config.pixel_std
    )
