"""Quick adaptation: fit a trained SBANet to a few corrected masks in seconds (its decoder, later
layers, or new correction heads beside the network).

Everything before what trains (both encoders, the fusions, TCSA) stays as it is, so its output
for a correction never changes during a run: :func:`cache_features` computes it once per
correction and per flip / quarter turn of the square (the expression's directions turned to
match, :mod:`sbanet.data.augment`), and :func:`adapt_decoder` trains only what follows on those
cached maps. One optimiser step then costs, e.g., a decoder forward and backward (~1 % of the
model's FLOPs at 320 px) instead of the whole network's.

What trains is named by ``AdaptConfig.train``:

* ``"bias"``: the classifier's two biases (a per-domain calibration of the output logit);
* ``"classifier"``: the final 1x1 convolution;
* ``"last"``: the last fusion block (``fuse2``, stride 4) and the classifier;
* ``"decoder"``: the whole decoder;
* ``"tcsa"``: TCSA and the whole decoder;
* ``"late"``: the image encoder's last stage (stride 32), its fusion and LayerNorm, TCSA and the
  decoder;
* ``"head"``: nothing of the network: new correction heads (:mod:`sbanet.modeling.correction_head`,
  one per group of corrected expressions) learn to correct the model's foreground logit from the
  image encoder's language-free pyramid (a cache of ``level="head"``).

The last two need the maps *before* what they train (:mod:`sbanet.training.adapt_cache`):
:func:`cache_features` with ``level="late"`` keeps the four fused maps before TCSA, the
language entering TCSA, and the input of the last image stage with the language entering its
fusion. A step of ``"late"`` then costs
about 2.4 times a decoder step (2-core EPYC, one thread, batch 8 at 320 px: 2.1 s against 0.87
s, load average ~3).

BatchNorm keeps the base's running statistics (a few corrections estimate them badly). Against
forgetting, batches of cached *replay* samples (the base's own training data) are mixed in with
weight ``replay_weight``, and ``anchor`` pulls the trained weights towards the base's (L2-SP).
Random crops of the cached pyramid (aligned to the coarsest stride) add scale/position variety
without another encoder pass. The result is the same SBANet with new weights where they trained:
it saves, loads and predicts like any checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import TRANSFORMS
from ..modeling.correction_head import GATE_FULL, CorrectionHead, CorrectionHeads
from .adapt_cache import LEVELS, FeatureCache, cache_features, cached_logits, decoder_level
from .metrics import SegmentationMetrics, intersection_union

__all__ = [  # the cache's names stay importable from here
    "LEVELS", "TRAINABLE", "UPSTREAM", "AdaptConfig", "AdaptResult", "FeatureCache", "adapt_decoder",
    "add_correction_heads", "cache_features", "cache_level", "cached_logits", "decoder_level", "evaluate_cached",
    "trainable_parameters", "trained_modules",
]  # fmt: skip
TRAINABLE = ("bias", "classifier", "last", "decoder", "tcsa", "late", "head")
# the modes that train something before the decoder: they need a cache of ``level="late"``
UPSTREAM = ("tcsa", "late")


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


def cache_level(train: str) -> str:
    """The :func:`cache_features` level that ``train`` (one of :data:`TRAINABLE`) trains on."""
    if train not in TRAINABLE:
        raise ValueError(f"train must be one of {TRAINABLE}, got {train!r}")
    return "late" if train in UPSTREAM else "head" if train == "head" else "decoder"


def add_correction_heads(model: nn.Module, corrections: FeatureCache) -> list[nn.Module]:
    """New correction heads on ``model`` (its ``correction`` and ``config.correction_keys``
    extended), one per group of the corrections' expressions: an expression joins the first group
    whose first expression it matches at :data:`GATE_FULL` similarity or more. Each head's keys
    are its group's sentence embeddings, its feature statistics those of the corrections'
    pyramid. Returns the new heads (untrained: they correct nothing yet)."""
    if corrections.pyramid is None or corrections.sentences is None:
        raise ValueError("correction heads train on features cached with level='head'")
    groups: list[list[torch.Tensor]] = []
    for sentence in torch.unique(corrections.sentences, dim=0):
        for group in groups:
            if float(group[0] @ sentence) >= GATE_FULL:
                group.append(sentence)
                break
        else:
            groups.append([sentence])
    flat = [f.float().transpose(0, 1).flatten(1) for f in corrections.pyramid]  # [C_i, N * h_i * w_i]
    mean = torch.cat([f.mean(1) for f in flat])
    std = torch.cat([f.std(1) for f in flat]).clamp(min=1e-3)
    config = model.config
    heads = [CorrectionHead(config.stage_dims, config.text_dim, len(group)) for group in groups]
    for head, group in zip(heads, groups):
        head.keys.copy_(torch.stack(group))
        head.feature_mean.copy_(mean)
        head.feature_std.copy_(std)
    if model.correction is None:
        model.correction = CorrectionHeads(config.stage_dims, config.text_dim, ())
    model.correction.heads.extend(heads)
    model.config = config.replace(correction_keys=(*config.correction_keys, *(len(g) for g in groups)))
    return heads


def trained_modules(model: nn.Module, train: str) -> dict[str, nn.Module]:
    """The modules whose weights ``train`` changes (their state is what a check keeps)."""
    if train not in TRAINABLE:
        raise ValueError(f"train must be one of {TRAINABLE}, got {train!r}")
    if train == "head":
        return {"correction": model.correction}
    modules = {"decoder": model.decoder}
    if train in UPSTREAM and model.tcsa is not None:
        modules["tcsa"] = model.tcsa
    if train == "late":
        last = len(model.fusions) - 1
        encoder = model.visual_encoder  # EfficientNet / ResNet: ``stages``; Swin: ``layers``
        modules["stage"] = (encoder.stages if hasattr(encoder, "stages") else encoder.layers)[last]
        modules["fusion"] = model.fusions[last]
        modules["stage_norm"] = model.stage_norms[last]
    return modules


def trainable_parameters(decoder: nn.Module, train: str, model: nn.Module | None = None) -> list[nn.Parameter]:
    """The parameters that ``train`` (one of :data:`TRAINABLE`) names (``model`` is needed for
    :data:`UPSTREAM` modes)."""
    if train in UPSTREAM:
        if model is None:
            raise ValueError(f"train={train!r} needs the model")
        return [p for module in trained_modules(model, train).values() for p in module.parameters()]
    if train == "head":
        raise ValueError("train='head' trains the heads add_correction_heads returns")
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
    cells = min(f.shape[-1] for f in features)
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
    batch = cache.select(rows)
    levels = len(batch.features)
    pyramid = batch.pyramid or []  # cropped with the features: the heads read the same window
    spatial = [*batch.features, *pyramid] + ([batch.stage_input] if batch.stage_input is not None else [])
    spatial, masks = _crop(spatial, batch.masks, config.crop, generator)
    batch.features, batch.masks = spatial[:levels], masks
    if batch.pyramid is not None:
        batch.pyramid = spatial[levels : levels + len(pyramid)]
    if batch.stage_input is not None:
        batch.stage_input = spatial[-1]
    logits = cached_logits(model, batch, config.train)
    logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=True)
    if config.foreground_weight is None:
        return model.loss(logits, masks)
    return model.loss(logits, masks, class_weights=torch.tensor([1.0, config.foreground_weight]))


@torch.no_grad()
def evaluate_cached(model: nn.Module, cache: FeatureCache, batch_size: int = 16, train: str = "late") -> dict[str, Any]:
    """The model's metrics on cached samples, as :func:`sbanet.training.evaluation.evaluate`
    computes them at the input size (``mIoU``, ``oIoU``, ``category_mIoU`` ...). Of a ``late``
    cache everything after it runs (``train="late"``: the last image stage too)."""
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(sorted({c for c in cache.categories if c is not None}))
    for start in range(0, len(cache), batch_size):
        batch = cache.select(slice(start, start + batch_size))
        logits = F.interpolate(
            cached_logits(model, batch, train), size=batch.masks.shape[-2:], mode="bilinear", align_corners=True
        )
        metrics.update_counts(*intersection_union(logits.argmax(1), batch.masks), batch.categories)
    model.train(was_training)
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
    needed = cache_level(config.train)  # decoder modes also run on a late cache (TCSA runs first)
    if corrections.level != needed and not (needed == "decoder" and corrections.level == "late"):
        raise ValueError(f"train={config.train!r} needs features cached with level={needed!r}")
    generator = torch.Generator().manual_seed(config.seed)
    heads = []
    if config.train == "head":  # the heads' initial weights follow the run's seed, not the global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            heads = add_correction_heads(model, corrections)
    modules = trained_modules(model, config.train)
    trainable_before = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    if heads:
        params = [p for head in heads for p in head.parameters()]
    else:
        params = trainable_parameters(model.decoder, config.train, model)
    for p in params:
        p.requires_grad_(True)
    base = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}

    def restore(state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, m in modules.items():
            m.load_state_dict(state[name])

    check = (lambda: evaluate_cached(model, held_out, train=config.train)) if held_out is not None else None
    best_state = snapshot()
    best = check()["mIoU"] if check is not None else -math.inf
    history, kept, step = [{"step": 0, "mIoU": float(best)}] if held_out is not None else [], 0, 0
    model.eval()  # BatchNorm keeps the base's statistics, drop-path is off
    batch = min(config.batch_size, len(corrections))
    try:
        for step in range(1, config.steps + 1):
            if cancel is not None and cancel():
                restore(best_state)
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
                metrics = check()
                history.append({"step": step, "mIoU": float(metrics["mIoU"])})
                if metrics["mIoU"] > best:
                    best, kept, best_state = metrics["mIoU"], step, snapshot()
            if callback is not None:
                callback(step, config.steps, loss.item(), metrics)
    finally:  # as the caller had them
        for p, flag in zip(model.parameters(), trainable_before):
            p.requires_grad_(flag)
        model.train(was_training)
    if held_out is not None:
        restore(best_state)
    else:
        kept = step
    return AdaptResult(step, history, kept)
