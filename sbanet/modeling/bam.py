"""Bidirectional Alignment Module (BAM), SBANet Sec. III-B, Fig. 3.

Per stage ``i``:

1. query tokens summarise the visual features ``F_Vi`` (Eq. 1, :mod:`sbanet.modeling.tokens`,
   with Table IV's alternatives);
2. the words align with the tokens and the language features are updated (Eq. 2-4,
   :class:`QueryTextAlignment`): vision -> language, the direction LAVT lacks;
3. the visual features are fused with the updated language at several pooling windows
   (Eq. 5-7, :class:`~sbanet.modeling.dfs.DynamicFeatureSelection`) and gated back into the
   backbone (language -> vision).

With ``config.bam = config.dfs = False`` the module is LAVT's PWAM + language gate (exactly LAVT's
code with ``pwam_activation="gelu"``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..config import SBANetConfig
from .dfs import DynamicFeatureSelection
from .pwam import PWAM, LanguageGate
from .tokens import LearnableQueryTokens, build_query_tokens

__all__ = ["BidirectionalAlignmentModule", "LearnableQueryTokens", "QueryTextAlignment", "StageOutput"]


class QueryTextAlignment(nn.Module):
    """Eq. (2)-(4): words align with the query tokens and the language features are updated.

    ``T = GELU(W_t F'_L(i-1))``, ``K = GELU(w_ik LQ'_i)``, ``V = GELU(w_iv LQ'_i)`` (1x1 convs),
    ``R = softmax(T K^T / sqrt(c_q)) V`` (each word attends over the tokens), ``R_i = LN(W_qt R)``,
    ``F'_Li = w_f(w_l(F'_L(i-1)) * R_i)`` with ``w_l, w_f = 1x1 conv + ReLU``. Padded words are
    zeroed in the output. ``separate_values=False`` (checkpoints of ``bam_attention="multihead"``)
    shares one projection for keys and values (``w_iv = w_ik``).

    The paper writes ``w_qt`` as "1x1 conv + norm" without naming the norm; a LayerNorm over
    channels is used so padded words cannot leak into real ones (an InstanceNorm over words would).
    """

    def __init__(self, text_dim: int, query_dim: int, separate_values: bool = True) -> None:
        super().__init__()
        self.query_dim = query_dim
        self.proj_text = nn.Sequential(nn.Linear(text_dim, query_dim), nn.GELU())
        self.proj_query = nn.Sequential(nn.Linear(query_dim, query_dim), nn.GELU())  # w_ik
        self.proj_value = nn.Sequential(nn.Linear(query_dim, query_dim), nn.GELU()) if separate_values else None  # w_iv
        self.w_qt = nn.Sequential(nn.Linear(query_dim, text_dim), nn.LayerNorm(text_dim))
        self.w_l = nn.Sequential(nn.Linear(text_dim, text_dim), nn.ReLU())
        self.w_f = nn.Sequential(nn.Linear(text_dim, text_dim), nn.ReLU())

    def forward(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        tokens: torch.Tensor,
        need_weights: bool = False,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """text ``[B, L, D]``, text_mask ``[B, L]``, tokens ``[B, M, c_q]`` -> ``F'_Li [B, L, D]``.

        ``token_mask [B, M]`` (True = real) hides tokens from the words (the word self-attention
        variant's tokens are words, padding included).

        With ``need_weights``: ``alignment [B, L, M]`` (Eq. 2's softmax, rows over tokens) and
        ``word_relevance [B, L]``: the same scores normalised over the real words and averaged
        over tokens, i.e. how much of the tokens' attention each word would receive.
        """
        t = self.proj_text(text)
        k = self.proj_query(tokens)
        v = k if self.proj_value is None else self.proj_value(tokens)
        scores = torch.matmul(t, k.transpose(1, 2)) / math.sqrt(self.query_dim)  # [B, L, M]
        logits = scores if token_mask is None else scores.masked_fill(~token_mask.bool()[:, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        relation = self.w_qt(torch.matmul(attn, v))  # R_i [B, L, D]
        mask = text_mask.to(text.dtype).unsqueeze(-1)
        updated = self.w_f(self.w_l(text) * relation) * mask
        if not need_weights:
            return updated, None
        word_logits = scores.masked_fill(~text_mask.bool().unsqueeze(-1), float("-inf"))
        per_token = torch.softmax(word_logits, dim=1)  # [B, L, M]
        if token_mask is None:
            relevance = per_token.mean(dim=2)  # [B, L]
        else:  # averaged over the real tokens only
            real = token_mask.to(per_token.dtype)[:, None, :]
            relevance = (per_token * real).sum(dim=2) / real.sum(dim=2).clamp_min(1.0)
        return updated, {"alignment": attn, "word_relevance": relevance}


class StageOutput(NamedTuple):
    next_input: torch.Tensor  # [B, H, W, C]: x + gate(F'_V) * F'_V, fed to the next stage (x if no gate)
    fused: torch.Tensor  # [B, H, W, C]: F'_V (LAVT's mm), LayerNorm-ed for the decoder
    text: torch.Tensor  # [B, L, D]: F'_Li (unchanged F_L without BAM)
    attention: dict[str, torch.Tensor] | None


class BidirectionalAlignmentModule(nn.Module):
    """One stage's vision-language fusion (Fig. 3); the LAVT baseline when BAM and DFS are off."""

    def __init__(self, config: SBANetConfig, stage: int, has_gate: bool = True) -> None:
        super().__init__()
        dim = config.stage_dims[stage]
        text_dim = config.text_dim
        if config.bam:
            self.query_tokens = build_query_tokens(config, dim, stage)
            self.alignment = QueryTextAlignment(
                text_dim, config.query_dim, separate_values=config.bam_attention == "single"
            )
        else:
            self.query_tokens = self.alignment = None
        if config.dfs:
            self.dfs = DynamicFeatureSelection(
                dim,
                text_dim,
                config.dfs_windows,
                config.fusion_dropout,
                project_micro=config.dfs_project_micro,
                activation=config.pwam_activation,
            )
            self.pwam = None
        else:
            self.dfs = None
            self.pwam = PWAM(dim, text_dim, config.fusion_dropout, config.pwam_activation)
        self.gate = LanguageGate(dim) if has_gate else None

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_attention: bool = False
    ) -> StageOutput:
        """x ``[B, H, W, C]`` (the stage's blocks' output), text ``[B, L, D]``, text_mask ``[B, L]``."""
        attention: dict[str, torch.Tensor] = {}
        if self.query_tokens is not None:
            tokens, token_attn, token_mask = self.query_tokens(x, text, text_mask, need_weights=need_attention)
            text, align = self.alignment(text, text_mask, tokens, need_attention, token_mask)
            if need_attention:
                attention.update(align)
                if token_attn is not None:
                    attention["query"] = token_attn
        fusion = self.dfs if self.dfs is not None else self.pwam
        fused, pixel_word = fusion(x, text, text_mask)
        if need_attention:
            attention["pixel_word"] = pixel_word
        next_input = self.gate(x, fused) if self.gate is not None else x
        return StageOutput(next_input, fused, text, attention if need_attention else None)
