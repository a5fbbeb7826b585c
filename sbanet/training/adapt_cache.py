"""The cached maps of quick adaptation (:mod:`sbanet.training.adapt`): what the frozen part of
SBANet gives for each correction, computed once per run.

``level="decoder"`` keeps the decoder's inputs (everything before the decoder is frozen);
``level="late"`` keeps the fused maps before TCSA, the language entering TCSA, and the input of the
last image stage with the language entering its fusion, so that the last stage, its fusion, TCSA
and the decoder can train on them (:func:`cached_logits` runs what follows the cache);
``level="head"`` keeps the decoder's inputs, the image encoder's language-free pyramid and the
expressions' sentence embeddings, what correction heads (:mod:`sbanet.modeling.correction_head`)
train on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.augment import TRANSFORMS, turn_tensor
from ..modeling.correction_head import sentence_embedding

LEVELS = ("decoder", "late", "head")


@dataclass
class FeatureCache:
    """Cached samples: ``features[i]`` ``[N, C_i, H_i, W_i]`` (strides 4..32), ``masks`` ``uint8
    [N, S, S]`` at the model's input size, and each row's ``categories``.

    Of ``level="decoder"`` (``text`` None): ``features`` are the decoder's inputs. Of
    ``level="late"``: ``features`` are the fused, normalised maps before TCSA, ``text`` ``[N, L,
    D]`` the language entering TCSA, ``text_mask`` ``[N, L]``, ``stage_input`` ``[N, C, S/16,
    S/16]`` the input of the last image stage and ``stage_text`` ``[N, L, D]`` the language
    entering the last fusion. Of ``level="head"``: ``features`` as of ``"decoder"``, ``pyramid``
    the language-free image stages ``[N, C_i, H_i, W_i]`` and ``sentences`` ``[N, D]``."""

    features: list[torch.Tensor]
    masks: torch.Tensor
    categories: list[str | None]
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    stage_input: torch.Tensor | None = None
    stage_text: torch.Tensor | None = None
    pyramid: list[torch.Tensor] | None = None
    sentences: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def level(self) -> str:
        if self.pyramid is not None:
            return "head"
        return "decoder" if self.text is None else "late"

    def select(self, rows: torch.Tensor | list[int] | slice) -> FeatureCache:
        """The rows ``rows`` (indices or a slice) as a cache of their own."""
        if not isinstance(rows, slice):
            rows = torch.as_tensor(rows, dtype=torch.long)
            categories = [self.categories[int(i)] for i in rows]
        else:
            categories = self.categories[rows]
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return FeatureCache(
            [f[rows] for f in self.features], self.masks[rows], categories,
            pick(self.text), pick(self.text_mask), pick(self.stage_input), pick(self.stage_text),
            None if self.pyramid is None else [f[rows] for f in self.pyramid], pick(self.sentences),
        )  # fmt: skip


@torch.no_grad()
def decoder_level(model: nn.Module, cache: FeatureCache, batch_size: int = 16) -> FeatureCache:
    """A ``late`` cache turned into the decoder's inputs (TCSA run once over it): what
    ``level="decoder"`` would have cached, for modes that train the decoder only."""
    if cache.text is None:
        return cache
    was_training = model.training
    model.eval()
    parts: list[list[torch.Tensor]] = [[] for _ in cache.features]
    for start in range(0, len(cache), batch_size):
        batch = cache.select(slice(start, start + batch_size))
        maps = [f.permute(0, 2, 3, 1) for f in batch.features]
        if model.tcsa is not None:
            maps, _ = model.tcsa(maps, batch.text, batch.text_mask, False)
        for level, f in enumerate(maps):
            parts[level].append(f.permute(0, 3, 1, 2).contiguous())
    model.train(was_training)
    return FeatureCache([torch.cat(p) for p in parts], cache.masks, cache.categories)


def _late_inputs(
    model: nn.Module, prefix: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :meth:`SBANet.decoder_inputs` up to TCSA: the fused maps ``[B, C_i, h_i, w_i]``, the
    language entering TCSA, the last image stage's input ``[B, C, h, w]`` and the language
    entering the last fusion."""
    x, maps, last = prefix, [], len(model.fusions) - 1
    stage_input = stage_text = None
    for i, fusion in enumerate(model.fusions):
        if i > 0:
            if i == last:
                stage_input, stage_text = x, text
            x = model.visual_encoder.stage(i, x)
        out = fusion(x, text, text_mask, False)
        x, text = out.next_input, out.text
        maps.append(model.stage_norms[i](out.fused).permute(0, 3, 1, 2))
    return maps, text, stage_input.permute(0, 3, 1, 2), stage_text


def cached_logits(model: nn.Module, cache: FeatureCache, train: str = "decoder") -> torch.Tensor:
    """The decoder's logits ``[B, 2, h, w]`` (stride 4) on the cached rows ``cache``; of a
    ``late`` cache, TCSA (and with ``train == "late"`` the last image stage and fusion) run first."""
    if cache.text is None:
        logits = model.decoder(cache.features)
        if cache.pyramid is not None and model.correction is not None:
            pyramid = cache.pyramid
            logits = model.correction.correct(logits, cache.sentences, lambda rows: [f[rows] for f in pyramid])
        return logits
    maps, text = [f.permute(0, 2, 3, 1) for f in cache.features], cache.text
    if train == "late":
        last = len(model.fusions) - 1
        x = model.visual_encoder.stage(last, cache.stage_input.permute(0, 2, 3, 1))
        out = model.fusions[last](x, cache.stage_text, cache.text_mask, False)
        maps[last], text = model.stage_norms[last](out.fused), out.text
    if model.tcsa is not None:
        maps, _ = model.tcsa(maps, text, cache.text_mask, False)
    return model.decoder([f.permute(0, 3, 1, 2) for f in maps])


@torch.no_grad()
def cache_features(
    model: nn.Module,
    dataset: Any,
    transforms: int = 1,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    level: str = "decoder",
) -> FeatureCache | None:
    """The decoder inputs (``level="decoder"``) or the maps before TCSA and the last image stage
    (``level="late"``, see :class:`FeatureCache`) of every item of ``dataset`` (a
    :class:`sbanet.data.ReferringDataset` built with ``augment=True`` when ``transforms > 1``)
    under its first ``transforms`` flips / turns. ``progress(done, total)`` after each batch;
    returns None when ``cancel()`` says so."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    turned = getattr(dataset, "turned_ids", None)
    if turned is None or transforms > turned.shape[0]:
        have = 0 if turned is None else turned.shape[0]
        raise ValueError(f"the dataset has tokens for {have} transforms, not {transforms} (build it with augment=True)")
    was_training = model.training
    model.eval()
    jobs = [(i, t) for i in range(len(dataset)) for t in range(transforms)]
    features: list[list[torch.Tensor]] = [[], [], [], []]
    extra: dict[str, list[torch.Tensor]] = {"text": [], "text_mask": [], "stage_input": [], "stage_text": []}
    pyramid: list[list[torch.Tensor]] = [[] for _ in features]
    sentences: list[torch.Tensor] = []
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
        prefix = model.encode_image_prefix(images_t)
        if level == "late":
            maps, final_text, stage_input, stage_text = _late_inputs(model, prefix, text, attention_t)
            for key, value in zip(extra, (final_text, attention_t, stage_input, stage_text)):
                extra[key].append(value.contiguous())
        else:
            maps, _ = model.decoder_inputs(prefix, text, attention_t)
        if level == "head":  # kept in half precision: the pyramid is most of the cache
            for index, f in enumerate(model.visual_pyramid(prefix)):
                pyramid[index].append(f.half().contiguous())
            sentences.append(sentence_embedding(text, attention_t))
        for index, m in enumerate(maps):
            features[index].append(m.contiguous())
        masks.extend(targets)
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    model.train(was_training)
    if not masks:
        raise ValueError("no samples to cache")
    joined: dict[str, Any] = {key: torch.cat(value) for key, value in extra.items()} if level == "late" else {}
    if level == "head":
        joined = {"pyramid": [torch.cat(f) for f in pyramid], "sentences": torch.cat(sentences)}
    return FeatureCache([torch.cat(f) for f in features], torch.stack(masks), categories, **joined)
