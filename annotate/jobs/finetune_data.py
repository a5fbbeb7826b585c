"""What a fine-tune run trains and measures on: its configuration, the store's accepted masks as
samples (train split vs held-out splits), and the optional replay of the original training data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbanet.data import ReferringDataset, ReferringSample, load_samples
from sbanet.image import read_image
from sbanet.training.adapt import AdaptConfig

from ..store import repository as repo
from ..store.database import Store
from ..store.masks import decode_mask
from ..store.models import MaskVersion

if TYPE_CHECKING:
    from sbanet.config import SBANetConfig
    from sbanet.data import ReferringDataset

# learning rates a fine-tune accepts: below, nothing changes; above, the weights diverge
LR_RANGE = (1e-7, 1e-2)
AUTO_REPLAY = "auto"  # replay_kind: the training data named in the base checkpoint's recipe
MODES = ("full", "quick")


@dataclass
class FinetuneConfig:
    """What a fine-tune run does; stored on the run row (with the :func:`plan_run` it resolved
    to). Fields named like :class:`sbanet.training.engine.TrainConfig`'s are handed to the engine and mean
    the same.

    The step budget grows with the data: unless ``steps`` is set, a run takes
    ``passes x (corrections + replay samples) / batch_size`` optimiser steps, kept within
    ``[min_steps, max_steps]``. Every ``checkpoint_every`` steps the job writes a resume point and,
    with ``early_stop``, measures the held-out masks: it stops after ``patience`` checks without a
    better held-out mIoU and keeps the best weights.
    """

    steps: int | None = None  # optimiser steps; None: from the budget below
    passes: float = 6.0  # budget: times the training set (corrections + replay) is gone through
    min_steps: int = 30
    max_steps: int = 150
    batch_size: int = 4
    checkpoint_every: int | None = None  # steps between held-out checks / resume points; None: 1/6 of the run
    early_stop: bool = True
    patience: int = 2  # held-out checks without improvement before stopping
    lr: float = 3e-4  # better than 1e-4 on SpaceNet corrections at this budget (docs/results.md)
    encoder_lr_mult: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    freeze_text_encoder: bool = True
    freeze_batchnorm: bool = True  # BatchNorm keeps the base's running statistics (less forgetting)
    recalibrate_bn: int = 0  # batches to re-estimate BatchNorm statistics with after training
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (sbanet.inference.precision)
    eval_splits: tuple[str, ...] = ("val", "test")
    max_eval: int | None = None  # evaluate on at most this many held-out samples
    eval_batch_size: int = 8
    include_imported: bool = True  # train on imported accepted masks too, not only app corrections
    # the mask statuses a run uses (per expression its newest version with one of them); the app's
    # "Adapt to my corrections" adds "submitted": a user's own saved corrections, not yet reviewed
    statuses: tuple[str, ...] = ("accepted",)
    # mix in the base model's training data so it does not forget: "auto" reads it from the base
    # checkpoint's recipe (metadata.recipe.data: data.root and its folder mix), any other value is
    # a load_samples kind read from replay_root; None: no replay
    replay_kind: str | None = AUTO_REPLAY
    replay_root: str | None = None  # "auto": the folder the recipe's relative paths start from (default: cwd)
    replay_split: str = "train"
    replay_options: dict[str, Any] = field(default_factory=dict)
    replay_ratio: float = 2.0  # replay samples per correction (2: less forgetting than 1, docs/results.md)
    # at least this many replay samples whenever replay is on; 0: a floor of 30 forgot more at N = 10
    min_replay: int = 0
    activate: bool = False  # make the new model the active one when it beats the base on mIoU
    # "full": the engine trains the network (encoders included) on the images; "quick": the frozen
    # part runs once per correction and flip/turn and only quick_train's part trains on those
    # cached maps (annotate.jobs.finetune_quick; seconds for a few corrections)
    mode: str = "full"
    # what trains: bias | classifier | last | decoder | tcsa | late | head (sbanet.training.adapt.TRAINABLE);
    # "head": correction heads on the language-free image pyramid, the network unchanged: the only
    # mode that gained on SpaceNet buildings (docs/results.md, "Quick adaptation", v3)
    quick_train: str = "head"
    # the adapted model's input size over the base's (quick_size rounds it to a multiple of 32); the
    # new version keeps it. 1.0 on the v5 base: at 224 px (0.7, v4's setting) v5 scores tile 6 0.491
    # against 0.524 at 320, so every adapted version lost 0.03-0.05 there; at 320 the held-out check
    # is higher in both domains (buildings 0.210 / 0.154, roads 0.381 / 0.312, 3 seeds x N = 5, 10,
    # 30 x 2 rules) and tile 6 stays within 0.02 (docs/results.md, "Quick adaptation", input size)
    quick_scale: float = 1.0
    quick_steps: int = 150
    quick_lr: float = 3e-3
    quick_transforms: int = 8  # flips / quarter turns cached per correction
    # smallest random crop of the cached maps (fraction of the side; 1: none). 1.0 is what the heads'
    # 3-seed grid ran with; 0.5 (one seed, buildings N = 5 / 10): 0.232 / 0.166 against 0.168 / 0.253
    quick_crop: float = 1.0
    quick_replay: int = 32  # replay samples a quick run caches (when replay is on)
    quick_replay_weight: float = 0.5
    quick_anchor: float = 0.0  # L2 pull of the decoder weights towards the base's
    # cross-entropy weight of the foreground against 1 for the background (None: the model's own,
    # 0.9 / 1.1), the model's Dice term kept. 3: buildings cover 5 % of a crop and a head learnt to
    # answer "less"; seeded, 3 seeds, buildings N = 5 / 10: test 0.138 against 0.106, held-out 0.212
    # against 0.160, tile 6 level (docs/results.md, "Quick adaptation", v4)
    quick_foreground_weight: float | None = 3.0
    allow_pickle: bool = False  # the base checkpoint may be a trusted .pt file

    def __post_init__(self) -> None:
        self.eval_splits = tuple(self.eval_splits)
        self.statuses = tuple(self.statuses)
        if not self.statuses or not set(self.statuses) <= {"accepted", "submitted"}:
            raise ValueError(f"statuses must be accepted and/or submitted masks, got {list(self.statuses)}")
        counts = (self.batch_size, self.eval_batch_size, self.min_steps, self.patience)
        if min(counts) < 1 or any(n is not None and n < 1 for n in (self.steps, self.checkpoint_every)):
            raise ValueError(
                "steps, min_steps, batch_size, eval_batch_size, checkpoint_every and patience must be >= 1"
            )
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= min_steps ({self.min_steps})")
        if not math.isfinite(self.passes) or self.passes <= 0:
            raise ValueError(f"passes must be > 0, got {self.passes}")
        if not LR_RANGE[0] <= self.lr <= LR_RANGE[1]:  # also refuses NaN and inf
            raise ValueError(
                f"the learning rate must be from {LR_RANGE[0]:g} to {LR_RANGE[1]:g} (fine-tuning uses ~1e-5 to 3e-4), "
                f"got {self.lr:g}"
            )
        if "train" in self.eval_splits or not self.eval_splits:
            raise ValueError(f"eval_splits must be held-out splits (val/test), got {self.eval_splits}")
        if not self.replay_ratio >= 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        if self.min_replay < 0:
            raise ValueError(f"min_replay must be >= 0, got {self.min_replay}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "quick":
            AdaptConfig(  # the quick settings are checked where they are defined
                train=self.quick_train, steps=self.quick_steps, lr=self.quick_lr, transforms=self.quick_transforms,
                crop=self.quick_crop, replay_weight=self.quick_replay_weight, anchor=self.quick_anchor,
                foreground_weight=self.quick_foreground_weight,
            )  # fmt: skip
        if self.quick_replay < 0:
            raise ValueError(f"quick_replay must be >= 0, got {self.quick_replay}")
        if not 0.25 <= self.quick_scale <= 4:
            raise ValueError(f"quick_scale must be from 0.25 to 4, got {self.quick_scale}")
        explicit = self.replay_kind not in (None, AUTO_REPLAY, "synthetic")
        if explicit and self.replay_root is None:
            raise ValueError(f"replay_kind {self.replay_kind!r} needs replay_root")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eval_splits": list(self.eval_splits), "statuses": list(self.statuses)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        # runs queued before the one name stored it as "amp" ("none" = fp32)
        data = {("precision" if key == "amp" else key): value for key, value in data.items()}
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
    """(train, held-out) mask version ids: per expression the newest version whose status is one
    of ``config.statuses`` (default: accepted)."""
    with store.ReadSession() as session:
        train, held_out = [], []
        newest: dict[int, MaskVersion] = {}
        for status in config.statuses:
            for version in repo.newest_versions(session, status=status):
                if version.expression_id not in newest or version.id > newest[version.expression_id].id:
                    newest[version.expression_id] = version
        for version in sorted(newest.values(), key=lambda v: v.expression_id):
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


def replay_sources(config: FinetuneConfig, base_metadata: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The datasets to replay, ``[{"kind", "root", "options"}]``, and why there are none (a
    sentence starting "no replay:") when there are none. ``"auto"`` takes the base checkpoint's
    recipe (``metadata.recipe.data``): its ``root`` and every ``folder`` entry of its ``mix``, the
    relative paths from ``replay_root`` (default: the working directory); folders not present here
    are left out, and when none is, the run goes on without replay and says so."""
    if config.replay_kind is None or config.replay_ratio == 0:
        return [], "no replay: switched off (replay_kind none or replay_ratio 0)"
    if config.replay_kind != AUTO_REPLAY:
        return [{"kind": config.replay_kind, "root": config.replay_root, "options": config.replay_options}], None
    data = ((base_metadata or {}).get("recipe") or {}).get("data") or {}
    if not data.get("root"):
        return [], "no replay: the base checkpoint's metadata names no training data (metadata.recipe.data)"
    entries = [data, *(m for m in data.get("mix") or [] if m.get("kind") == "folder" and m.get("root"))]
    start = Path(config.replay_root or ".")
    sources, missing = [], []
    for entry in entries:
        root = Path(entry["root"]) if Path(entry["root"]).is_absolute() else start / entry["root"]
        if not root.is_dir():
            missing.append(str(root))
        elif str(root) not in (s["root"] for s in sources):
            options = entry.get("options") or {}
            sources.append({"kind": entry.get("kind", "folder"), "root": str(root), "options": options})
    if not sources:
        return [], f"no replay: the base's training data is not here ({', '.join(missing)}; set replay_root)"
    return sources, None


def replay_pool(sources: list[dict[str, Any]], split: str) -> list[ReferringSample]:
    """Every sample of ``split`` of the replay datasets, in order."""
    return [s for source in sources for s in load_samples(source["kind"], source["root"], split, **source["options"])]


def draw_replay(pool: list[ReferringSample], count: int, seed: int) -> list[ReferringSample]:
    """``count`` samples of ``pool`` drawn (seeded, without replacement; all when it has fewer)."""
    if count <= 0 or not pool:
        return []
    chosen = np.random.default_rng(seed).choice(len(pool), min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(chosen)]


def budget(config: FinetuneConfig, corrections: int, replay: int) -> tuple[int, str]:
    """Optimiser steps of a run and the sentence that says how they were chosen."""
    if config.steps is not None:
        return config.steps, f"{config.steps} steps (set)"
    batch = max(1, min(config.batch_size, corrections + replay))
    wanted = math.ceil(config.passes * (corrections + replay) / batch)
    steps = min(max(wanted, config.min_steps), config.max_steps)
    return steps, (
        f"{steps} steps: {config.passes:g} passes over {corrections} corrections + {replay} replay samples at "
        f"batch {batch} = {wanted}, kept within [{config.min_steps}, {config.max_steps}]"
    )


def plan_run(
    config: FinetuneConfig, corrections: int, base_metadata: dict[str, Any]
) -> tuple[dict[str, Any], list[ReferringSample]]:
    """What a run will do, resolved once and recorded on the run and the new model: replay
    sources and count (or why there is none), steps, checks; plus the replay samples drawn."""
    sources, note = replay_sources(config, base_metadata)
    pool: list[ReferringSample] = []
    if sources:
        try:
            pool = replay_pool(sources, config.replay_split)
        except (OSError, ValueError) as exc:
            if config.replay_kind != AUTO_REPLAY:
                raise ValueError(f"cannot read the replay data: {exc}") from exc
            sources, note = [], f"no replay: the base's training data could not be read ({exc})"
        if sources and not pool:
            sources, note = [], f"no replay: no {config.replay_split!r} samples in {[s['root'] for s in sources]}"
    if config.mode == "quick":
        replay = draw_replay(pool, config.quick_replay, config.seed)
        names = {"tcsa": "TCSA + decoder", "late": "late-layer", "head": "correction-head"}
        what = names.get(config.quick_train, "decoder")
        steps, rule = config.quick_steps, f"quick: {config.quick_steps} {what} steps on cached features"
    else:
        replay = draw_replay(pool, max(round(config.replay_ratio * corrections), config.min_replay), config.seed)
        steps, rule = budget(config, corrections, len(replay))
    check_every = config.checkpoint_every or max(1, math.ceil(steps / 6))
    plan = {
        "corrections": corrections,
        "replay": {"sources": sources, "split": config.replay_split, "samples": len(replay)} if replay else note,
        "steps": steps,
        "budget": rule,
        "check_every": check_every,
        "early_stop": {"patience": config.patience} if config.early_stop else False,
    }
    return plan, replay


def planned_replay(config: FinetuneConfig, plan: dict[str, Any]) -> list[ReferringSample]:
    """The replay samples of a recorded plan (the same draw: a resumed run trains on the same data)."""
    replay = plan["replay"]
    if not isinstance(replay, dict):
        return []
    return draw_replay(replay_pool(replay["sources"], replay["split"]), replay["samples"], config.seed)


def quick_size(config: FinetuneConfig, base_size: int) -> int:
    """The input size a quick run adapts (and the new version predicts) at: the base's
    ``base_size`` times ``quick_scale``, to the nearest multiple of 32 (at least 32)."""
    return max(32, 32 * round(base_size * config.quick_scale / 32))


def model_dataset(
    samples: list[ReferringSample], config: SBANetConfig, tokenizer: Any, augment: bool = False
) -> ReferringDataset:
    """Samples prepared as a model with ``config`` expects them (input size, tokens, normalisation);
    ``augment``: with the expressions' words for every flip / quarter turn."""

    return ReferringDataset(
        samples, config.image_size, tokenizer, config.max_tokens, config.pixel_mean, config.pixel_std, augment=augment
    )
