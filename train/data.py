"""Samples and datasets for the command lines, from a dataset kind, root and split."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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
    mix: Sequence[dict[str, Any]] = (),
    augment: bool = False,
    photometric: bool = False,
    scale: tuple[float, float] | None = None,
) -> ReferringDataset:
    """``load_samples(kind, root, split, **options)``, optionally text-blind and cut to the first
    ``limit`` samples, as a :class:`ReferringDataset` at the model's input size and token length.

    ``mix``: more sources appended to these samples, each ``{"kind", "root", "split" (default
    ``split``), "options", "limit"}`` (``data.mix`` of the fit config), e.g. synthetic scenes
    next to a land-cover conversion. ``augment``: flips and quarter turns, ``photometric``: colour /
    exposure / blur / JPEG changes, ``scale``: class-level items seen closer or farther (training
    only)."""
    samples = _limited(kind, root, split, options, limit)
    for entry in mix:
        samples += _limited(
            entry["kind"], entry.get("root"), entry.get("split", split), entry.get("options"), entry.get("limit")
        )
    if blind_text:
        samples = blind(samples)
    c = config
    return ReferringDataset(
        samples,
        c.image_size,
        tokenizer,
        c.max_tokens,
        c.pixel_mean,
        c.pixel_std,
        augment=augment,
        photometric=photometric,
        scale=scale,
    )


def _limited(
    kind: str, root: str | Path | None, split: str, options: dict[str, Any] | None, limit: int | None
) -> list[ReferringSample]:
    samples = load_samples(kind, root, split, **(options or {}))
    if not samples:
        raise ValueError(f"the {split!r} split of {kind} dataset at {root} has no samples")
    return samples if limit is None else samples[:limit]
