"""Quick adaptation: fit the decoder of a trained SBANet to a few corrected masks in seconds.

Everything before the decoder (both encoders, the fusions, TCSA) stays as it is, so its output
for a correction never changes during a run: :func:`cache_features` computes it once per
correction and per flip / quarter turn of the square (the expression's directions turned to
match, :mod:`sbanet.data.augment`), and :func:`adapt_decoder` trains only decoder parameters on
those cached maps. One optimiser step then costs a decoder forward and backward (~1 % of the
model's FLOPs at 320 px) instead of the whole network's.

What trains is named by ``AdaptConfig.train``:

* ``"bias"``: the classifier's two biases (a per-domain calibration of the output logit);
* ``"classifier"``: the final 1x1 convolution;
* ``"last"``: the last fusion block (``fuse2``, stride 4) and the classifier;
* ``"decoder"``: the whole decoder.

BatchNorm keeps the base's running statistics (a few corrections estimate them badly). Against
forgetting, batches of cached *replay* samples (the base's own training data) are mixed in with
weight ``replay_weight``, and ``anchor`` pulls the trained weights towards the base's (L2-SP).
Random crops of the cached pyramid (aligned to the coarsest stride) add scale/position variety
without another encoder pass. The result is the same SBANet with new decoder weights: it saves,
loads and predicts like any checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import TRANSFORMS, turn_tensor
from .metrics import SegmentationMetrics, intersection_union

TRAINABLE = ("bias", "classifier", "last", "decoder")


@dataclass
class AdaptConfig:
    """A quick-adaptation run (see the module docstring)."""

    train: str = "decoder"  # which decoder parameters train: one of TRAINABLE
    steps: int = 120
    lr: float = 1e-3
    batch_size: int = 8  # cached corrections per step (and as many replay samples when replay is on)
    transforms: int = 8  # flips / quarter turns cached per correction (1: as given, 8: the whole group)
    crop: float = 0.75  # smallest side of a random crop of the cached pyramid (fraction; 1: no crop)
    replay_weight: float = 0.5  # weight of the replay batch's loss
    anchor: float = 0.0  # L2 pull of the trained weights towards the base's
    weight_decay: float = 0.0
    check_every: int = 20  # steps between held-out checks (the best check's weights are kept)
    # cross-entropy weight of the foreground class (None: the model's own loss and class weights);
    # sparse targets (small buildings) are otherwise cheapest to answer with "nothing"
    foreground_weight: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train not in TRAINABLE:
            raise ValueError(f"train must be one of {TRAINABLE}, got {self.train!r}")
        if min(self.steps, self.batch_size, self.check_every) < 1:
            raise ValueError("steps, batch_size and check_every must be >= 1")
        if not 1 <= self.transforms <= len(TRANSFORMS):
            raise ValueError(f"transforms must be from 1 to {len(TRANSFORMS)}, got {self.transforms}")
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be in (0, 1], got {self.crop}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.foreground_weight is not None and not self.foreground_weight > 0:
            raise ValueError(f"foreground_weight must be > 0, got {self.foreground_weight}")
        if min(self.replay_weight, self.anchor, self.weight_decay) < 0:
            raise ValueError("replay_weight, anchor and weight_decay must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FeatureCache:
    """Decoder inputs of cached samples: ``features[i]`` ``[N, C_i, H_i, W_i]`` (strides 4..32),
    ``masks`` ``uint8 [N, S, S]`` at the model's input size, and each row's ``categories``."""

    features: list[torch.Tensor]
    masks: torch.Tensor
    categories: list[str | None]

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@torch.no_grad()
def cache_features(
    model: nn.Module,
    dataset: Any,
    transforms: int = 1,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FeatureCache | None:
    """The decoder inputs of every item of ``dataset`` (a :class:`sbanet.data.ReferringDataset`
    built with ``augment=True`` when ``transforms > 1``) under its first ``transforms`` flips /
    turns. ``progress(done, total)`` after each batch; returns None when ``cancel()`` says so."""
    turned = getattr(dataset, "turned_ids", None)
    if turned is None or transforms > turned.shape[0]:
        have = 0 if turned is None else turned.shape[0]
        raise ValueError(f"the dataset has tokens for {have} transforms, not {transforms} (build it with augment=True)")
    was_training = model.training
    model.eval()
    jobs = [(i, t) for i in range(len(dataset)) for t in range(transforms)]
    features: list[list[torch.Tensor]] = [[], [], [], []]
    masks, categories = [], []
    for start in range(0, len(jobs), batch_size):
        if cancel is not None and cancel():
            model.train(was_training)
            return None
        images, targets, ids, attention = [], [], [], []
        for i, t in jobs[start : start + batch_size]:
            item = dataset.base_item(i)
            images.append(turn_tensor(item["image"], *TRANSFORMS[t]))
            targets.append(turn_tensor(item["mask"], *TRANSFORMS[t]).to(torch.uint8))
            ids.append(dataset.turned_ids[t, i])
            attention.append(dataset.turned_attention[t, i])
            categories.append(dataset.samples[i].category)
        images_t, ids_t, attention_t = torch.stack(images), torch.stack(ids), torch.stack(attention)
        text = model.encode_text(ids_t, attention_t)
        maps, _ = model.decoder_inputs(model.encode_image_prefix(images_t), text, attention_t)
        for level, m in enumerate(maps):
            features[level].append(m.contiguous())
        masks.extend(targets)
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    model.train(was_training)
    if not masks:
        raise ValueError("no samples to cache")
    return FeatureCache([torch.cat(level) for level in features], torch.stack(masks), categories)


def trainable_parameters(decoder: nn.Module, train: str) -> list[nn.Parameter]:
    """The decoder parameters that ``train`` (one of :data:`TRAINABLE`) names."""
    if train == "bias":
        return [decoder.classifier.bias]
    if train == "classifier":
        return list(decoder.classifier.parameters())
    if train == "last":
        return [*decoder.fuse2.parameters(), *decoder.classifier.parameters()]
    if train == "decoder":
        return list(decoder.parameters())
    raise ValueError(f"train must be one of {TRAINABLE}, got {train!r}")


def _crop(features: list[torch.Tensor], masks: torch.Tensor, fraction: float, generator: torch.Generator):
    """A random crop of a cached pyramid, aligned to its coarsest grid so every level agrees."""
    cells = features[-1].shape[-1]
    side = max(1, round(cells * fraction))
    if fraction >= 1 or side >= cells:
        return features, masks
    side = int(torch.randint(side, cells + 1, (), generator=generator))
    y, x = (int(v) for v in torch.randint(0, cells - side + 1, (2,), generator=generator))
    out = []
    for f in features:
        scale = f.shape[-1] // cells
        out.append(f[..., y * scale : (y + side) * scale, x * scale : (x + side) * scale])
    scale = masks.shape[-1] // cells
    return out, masks[..., y * scale : (y + side) * scale, x * scale : (x + side) * scale]


def _batch_loss(
    model: nn.Module, cache: FeatureCache, rows: torch.Tensor, config: AdaptConfig, generator: torch.Generator
) -> torch.Tensor:
    """The loss of the decoder on a random crop of the cached rows ``rows``."""
    features, masks = _crop([f[rows] for f in cache.features], cache.masks[rows], config.crop, generator)
    logits = F.interpolate(model.decoder(features), size=masks.shape[-2:], mode="bilinear", align_corners=True)
    if config.foreground_weight is None:
        return model.loss(logits, masks)
    return model.loss(logits, masks, class_weights=torch.tensor([1.0, config.foreground_weight]))


@torch.no_grad()
def evaluate_cached(model: nn.Module, cache: FeatureCache, batch_size: int = 16) -> dict[str, Any]:
    """The model's metrics on cached samples, as :func:`sbanet.training.evaluation.evaluate`
    computes them at the input size (``mIoU``, ``oIoU``, ``category_mIoU`` ...)."""
    was_training = model.decoder.training
    model.decoder.eval()
    metrics = SegmentationMetrics(sorted({c for c in cache.categories if c is not None}))
    for start in range(0, len(cache), batch_size):
        features = [f[start : start + batch_size] for f in cache.features]
        masks = cache.masks[start : start + batch_size]
        logits = F.interpolate(model.decoder(features), size=masks.shape[-2:], mode="bilinear", align_corners=True)
        names = cache.categories[start : start + batch_size]
        metrics.update_counts(*intersection_union(logits.argmax(1), masks), names)
    model.decoder.train(was_training)
    return metrics.compute()


@dataclass
class AdaptResult:
    """How a run went: ``steps`` run, the ``history`` of held-out checks ``[{"step", "mIoU"}]``,
    the ``kept_step`` whose weights the model now holds (0: the base's), and ``cancelled``."""

    steps: int
    history: list[dict[str, float]]
    kept_step: int
    cancelled: bool = False


def adapt_decoder(
    model: nn.Module,
    corrections: FeatureCache,
    config: AdaptConfig,
    *,
    replay: FeatureCache | None = None,
    held_out: FeatureCache | None = None,
    callback: Callable[[int, int, float, dict[str, Any] | None], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AdaptResult:
    """Train ``model``'s decoder (in place) on cached ``corrections`` (+ ``replay``); with
    ``held_out``, measure every ``check_every`` steps and keep the best check's weights (the base's
    when no check beats it). ``callback(step, steps, loss, metrics_or_None)`` after every step."""
    generator = torch.Generator().manual_seed(config.seed)
    decoder = model.decoder
    trainable_before = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    params = trainable_parameters(decoder, config.train)
    for p in params:
        p.requires_grad_(True)
    base = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    best_state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    best = evaluate_cached(model, held_out)["mIoU"] if held_out is not None else -math.inf
    history, kept, step = [{"step": 0, "mIoU": float(best)}] if held_out is not None else [], 0, 0
    decoder.eval()  # BatchNorm keeps the base's statistics
    batch = min(config.batch_size, len(corrections))
    try:
        for step in range(1, config.steps + 1):
            if cancel is not None and cancel():
                decoder.load_state_dict(best_state)
                return AdaptResult(step - 1, history, kept, cancelled=True)
            rows = torch.randperm(len(corrections), generator=generator)[:batch]
            loss = _batch_loss(model, corrections, rows, config, generator)
            if replay is not None and len(replay) and config.replay_weight > 0:
                replay_rows = torch.randperm(len(replay), generator=generator)[: config.batch_size]
                loss = loss + config.replay_weight * _batch_loss(model, replay, replay_rows, config, generator)
            if config.anchor > 0:
                loss = loss + config.anchor * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, base))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            metrics = None
            if held_out is not None and (step % config.check_every == 0 or step == config.steps):
                metrics = evaluate_cached(model, held_out)
                history.append({"step": step, "mIoU": float(metrics["mIoU"])})
                if metrics["mIoU"] > best:
                    best, kept = metrics["mIoU"], step
                    best_state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
            if callback is not None:
                callback(step, config.steps, loss.item(), metrics)
    finally:  # as the caller had them
        for p, flag in zip(model.parameters(), trainable_before):
            p.requires_grad_(flag)
    if held_out is not None:
        decoder.load_state_dict(best_state)
    else:
        kept = step
    return AdaptResult(step, history, kept)
