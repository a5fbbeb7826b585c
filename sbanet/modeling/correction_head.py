"""Correction heads: what a project's quick adaptation adds to SBANet (not part of the paper).

A few corrected masks of a new domain (another city, another sensor) cannot move the network's
language-fused maps far: fitting the decoder on them gained nothing on SpaceNet buildings
(docs/results.md, "Quick adaptation"). What they can fit is a small pixel classifier on the
image encoder's own, language-free pyramid (ImageNet features: edges, textures, roof shapes)
that corrects the model's output where the corrected expressions are asked, in the manner of
interactive pixel classifiers (ilastik): per pixel, the four visual stages (upsampled to stride
4) and the model's foreground logit go through a 1x1 convolution, a 3x3 and a 1x1 one, and the
result is *added* to the foreground logit (starting from the model's answer is what made few
corrections pay: without the residual the head scored 0.070 where with it 0.163, N = 5).

A head answers only where it was taught: it keeps the sentence embeddings (mean-pooled text
features ``F_L``; the shipped model's frozen all-MiniLM-L6-v2 is a sentence-embedding model) of
the expressions it was fitted on, and its correction is weighted by the best cosine similarity
of the asked expression to them: 1 from :data:`GATE_FULL` up, 0 below :data:`GATE_OFF`,
linear between. Measured on the shipped model: paraphrases of a class ("all buildings" / "the
buildings" / "every building") score 0.75-0.94 against each other, other classes 0.12-0.57
("the roads" 0.31), instance expressions of the same class 0.55-0.66 ("the largest building").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

GATE_OFF = 0.70  # below this similarity to every taught expression the head stays silent
GATE_FULL = 0.85  # from this similarity on it corrects fully
HIDDEN = 32


def sentence_embedding(text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' features, unit length: ``[B, L, D]``, ``[B, L]`` -> ``[B, D]``."""
    weights = text_mask.to(text.dtype).unsqueeze(-1)
    pooled = (text * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(pooled.float(), dim=-1)


class CorrectionHead(nn.Module):
    """One head: ``keys`` taught sentence embeddings ``[K, D]`` and a pixel classifier over the
    visual pyramid ``[B, C_i, H/2^(i+2), W/2^(i+2)]`` + the model's foreground logit."""

    def __init__(self, stage_dims: tuple[int, ...], text_dim: int, keys: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        if keys < 1:
            raise ValueError(f"a correction head needs at least one taught expression, got {keys}")
        self.register_buffer("keys", torch.zeros(keys, text_dim))
        # the pyramid's per-channel statistics on the corrections (set before fitting): the head
        # sees standardised features, whatever the encoder's scale per stage
        self.register_buffer("feature_mean", torch.zeros(sum(stage_dims)))
        self.register_buffer("feature_std", torch.ones(sum(stage_dims)))
        self.stage_dims = tuple(stage_dims)
        # the first 1x1 convolution of the concatenated, upsampled pyramid, applied per stage at
        # its own resolution and summed after upsampling (both are linear: the same result, at a
        # fraction of the memory)
        self.reduce = nn.ModuleList(nn.Conv2d(c, hidden, 1, bias=False) for c in stage_dims)
        self.logit_in = nn.Conv2d(1, hidden, 1)
        self.classify = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 1)
        )
        # a new head corrects nothing until it has trained: the adapted model starts as its base
        nn.init.zeros_(self.classify[-1].weight)
        nn.init.zeros_(self.classify[-1].bias)

    def gate(self, sentences: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` unit sentence embeddings -> the weight of this head's correction ``[B]``."""
        similarity = (sentences @ F.normalize(self.keys.float(), dim=-1).T).amax(-1)
        return ((similarity - GATE_OFF) / (GATE_FULL - GATE_OFF)).clamp(0.0, 1.0)

    def correction(self, pyramid: list[torch.Tensor], foreground: torch.Tensor) -> torch.Tensor:
        """pyramid ``[B, C_i, h_i, w_i]`` (stride 4 first), foreground logit ``[B, 1, h, w]`` at
        stride 4 -> the logit's correction ``[B, 1, h, w]``."""
        size = foreground.shape[-2:]
        hidden = self.logit_in(foreground)
        start = 0
        for level, (f, conv) in enumerate(zip(pyramid, self.reduce)):
            width = self.stage_dims[level]
            mean = self.feature_mean[start : start + width].view(1, -1, 1, 1)
            std = self.feature_std[start : start + width].view(1, -1, 1, 1)
            start += width
            reduced = conv((f.float() - mean) / std)
            if reduced.shape[-2:] != size:
                reduced = F.interpolate(reduced, size=size, mode="bilinear", align_corners=False)
            hidden = hidden + reduced
        return self.classify(hidden)


class CorrectionHeads(nn.Module):
    """The heads of an adapted model (one per group of corrected expressions), applied to the
    decoder's logits ``[B, 2, h, w]`` (stride 4): each adds its gated correction to the
    foreground channel."""

    def __init__(self, stage_dims: tuple[int, ...], text_dim: int, keys_per_head: tuple[int, ...]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(CorrectionHead(stage_dims, text_dim, k) for k in keys_per_head)

    def forward(
        self,
        logits: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        pyramid_of: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> torch.Tensor:
        """logits ``[B, 2, h, w]``, text ``[B, L, D]``, text_mask ``[B, L]``; ``pyramid_of(rows)``:
        the visual pyramid ``[R, C_i, h_i, w_i]`` of the rows a ``bool [B]`` mask picks -> corrected
        logits ``[B, 2, h, w]`` (rows no head recognises are unchanged)."""
        return self.correct(logits, sentence_embedding(text, text_mask), pyramid_of)

    def correct(
        self, logits: torch.Tensor, sentences: torch.Tensor, pyramid_of: Callable[[torch.Tensor], list[torch.Tensor]]
    ) -> torch.Tensor:
        """:meth:`forward` with the sentence embeddings ``[B, D]`` already pooled (cached)."""
        if not len(self.heads):
            return logits
        gates = torch.stack([head.gate(sentences) for head in self.heads], dim=1)  # [B, heads]
        rows = (gates > 0).any(1)
        if not rows.any():  # no expression a head was taught: no pyramid is computed
            return logits
        pyramid = pyramid_of(rows)
        foreground = (logits[rows, 1:2] - logits[rows, 0:1]).float()
        # a head whose gate is 0 on a picked row adds 0 there
        corrections = sum(
            gates[rows, k].view(-1, 1, 1, 1) * head.correction(pyramid, foreground) for k, head in enumerate(self.heads)
        )
        delta = torch.zeros_like(logits[:, 1:2], dtype=torch.float32)
        delta[rows] = corrections.float()  # bf16 under autocast
        return torch.cat([logits[:, 0:1], logits[:, 1:2] + delta.to(logits.dtype)], dim=1)
