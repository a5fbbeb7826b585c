"""What a fine-tune run trains and measures on: its configuration, the store's accepted masks as
samples (train split vs held-out splits), and the optional replay of the original training data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbanet.data import ReferringSample, load_samples
from sbanet.image import read_image

from . import repository as repo
from .masks import decode_mask
from .models import MaskVersion
from .store import Store

if TYPE_CHECKING:
    from sbanet.config import SBANetConfig
    from sbanet.data import ReferringDataset

# learning rates a fine-tune accepts: below, nothing changes; above, the weights diverge
LR_RANGE = (1e-7, 1e-2)


@dataclass
class FinetuneConfig:
    """What a fine-tune run does; stored resolved on the run row. Fields named like
    :class:`sbanet.engine.TrainConfig`'s are handed to the engine and mean the same."""

    steps: int = 200  # optimiser steps
    batch_size: int = 4
    checkpoint_every: int = 50  # optimiser steps between resume checkpoints (last.pt)
    lr: float = 1e-4
    encoder_lr_mult: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    freeze_text_encoder: bool = True
    recalibrate_bn: int = 0  # batches to re-estimate BatchNorm statistics with after training
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    eval_splits: tuple[str, ...] = ("val", "test")
    max_eval: int | None = None  # evaluate on at most this many held-out samples
    eval_batch_size: int = 8
    include_imported: bool = True  # train on imported accepted masks too, not only app corrections
    replay_kind: str | None = None  # mix in the base model's training data: a load_samples kind
    replay_root: str | None = None
    replay_split: str = "train"
    replay_options: dict[str, Any] = field(default_factory=dict)
    replay_ratio: float = 1.0  # replay samples per correction
    activate: bool = False  # make the new model the active one when it beats the base on mIoU
    allow_pickle: bool = False  # the base checkpoint may be a trusted .pt file

    def __post_init__(self) -> None:
        self.eval_splits = tuple(self.eval_splits)
        if min(self.steps, self.batch_size, self.eval_batch_size, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, eval_batch_size and checkpoint_every must be >= 1")
        if not LR_RANGE[0] <= self.lr <= LR_RANGE[1]:  # also refuses NaN and inf
            raise ValueError(
                f"the learning rate must be from {LR_RANGE[0]:g} to {LR_RANGE[1]:g} (fine-tuning uses ~1e-5 to 1e-4), "
                f"got {self.lr:g}"
            )
        if "train" in self.eval_splits or not self.eval_splits:
            raise ValueError(f"eval_splits must be held-out splits (val/test), got {self.eval_splits}")
        if self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        if self.replay_kind is not None and self.replay_root is None and self.replay_kind != "synthetic":
            raise ValueError(f"replay_kind {self.replay_kind!r} needs replay_root")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eval_splits": list(self.eval_splits)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fine-tune config fields: {unknown}")
        return cls(**data)


def store_sample(files_root: Path, version: MaskVersion) -> ReferringSample:
    """A mask version as a training sample: the stored image file and a snapshot of the mask."""
    expression, image = version.expression, version.expression.image
    return ReferringSample(
        sample_id=f"store/expression-{expression.id}/mask-{version.id}",
        image_id=f"store/image-{image.id}",
        expression=expression.text,
        split=expression.split,
        load_image=partial(read_image, files_root / image.path),
        load_mask=partial(decode_mask, version.rle, version.height, version.width),
        category=expression.category,
    )


def select_masks(store: Store, config: FinetuneConfig) -> tuple[list[int], list[int]]:
    """(train, held-out) mask version ids: the newest accepted version of each expression."""
    with store.ReadSession() as session:
        train, held_out = [], []
        for version in repo.newest_versions(session, status="accepted"):
            split = version.expression.split
            if split == "train" and (config.include_imported or version.expression.source != "imported"):
                train.append(version.id)
            elif split in config.eval_splits:
                held_out.append(version.id)
    if config.max_eval is not None and len(held_out) > config.max_eval:
        chosen = np.random.default_rng(config.seed).choice(len(held_out), config.max_eval, replace=False)
        held_out = sorted(held_out[i] for i in chosen)
    return train, held_out


def store_samples(store: Store, ids: list[int]) -> list[ReferringSample]:
    """The given mask versions as samples (in the given order)."""
    with store.ReadSession() as session:
        return [store_sample(store.files.root, repo.get_mask_version(session, i)) for i in ids]


def replay_samples(config: FinetuneConfig, count: int) -> list[ReferringSample]:
    """``count`` samples drawn (seeded, without replacement) from the replay dataset."""
    if config.replay_kind is None or count == 0:
        return []
    pool = load_samples(config.replay_kind, config.replay_root, config.replay_split, **config.replay_options)
    if not pool:
        raise ValueError(f"the replay dataset {config.replay_kind} at {config.replay_root} has no samples")
    chosen = np.random.default_rng(config.seed).choice(len(pool), min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(chosen)]


def model_dataset(samples: list[ReferringSample], config: SBANetConfig, tokenizer: Any) -> ReferringDataset:
    """Samples prepared as a model with ``config`` expects them (input size, tokens, normalisation)."""
    from sbanet.data import ReferringDataset

    return ReferringDataset(
        samples, config.image_size, tokenizer, config.max_tokens, config.pixel_mean, config.pixel_std
    )
