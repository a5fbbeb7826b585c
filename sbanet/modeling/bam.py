"""Bidirectional Alignment Module (BAM), SBANet Sec. III-B, Fig. 3.

Per stage ``i``:

1. query tokens summarise the visual features ``F_Vi`` (Eq. 1, :class:`LearnableQueryTokens`;
   Table IV's alternatives are :class:`VisualSelfAttentionTokens` and :class:`VisualTokens`);
2. the words align with the tokens and the language features are updated (Eq. 2-4,
   :class:`QueryTextAlignment`): vision -> language, the direction LAVT lacks;
3. the visual features are fused with the updated language at several pooling windows
   (Eq. 5-7, :class:`~sbanet.modeling.dfs.DynamicFeatureSelection`) and gated back into the
   backbone (language -> vision).

With ``config.bam = config.dfs = False`` the module is exactly LAVT's PWAM + language gate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SBANetConfig
from .dfs import DynamicFeatureSelection
from .pwam import PWAM, LanguageGate


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention. q ``[B, M, C]``, k/v ``[B, N, C]`` -> ``[B, M, C]``.

    With ``need_weights`` the weights are computed explicitly and returned averaged over heads
    (``[B, M, N]``); otherwise the fused kernel runs and no ``[M, N]`` matrix is kept.
    """
    b, m, c = q.shape
    n = k.shape[1]
    q = q.view(b, m, heads, c // heads).transpose(1, 2)
    k = k.view(b, n, heads, c // heads).transpose(1, 2)
    v = v.view(b, n, heads, c // heads).transpose(1, 2)
    if need_weights:
        attn = torch.softmax(q @ k.transpose(-2, -1) * (c // heads) ** -0.5, dim=-1)
        out = attn @ v
        weights = attn.mean(dim=1)
    else:
        out = F.scaled_dot_product_attention(q, k, v)
        weights = None
    return out.transpose(1, 2).reshape(b, m, c), weights


class TokenMLP(nn.Module):
    """Post-norm transformer tail shared by the token variants: ``y = LN(x + u)``, ``LN(y + MLP(y))``."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, update: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x if update is None else x + update)
        return self.norm2(y + self.mlp(y))


class LearnableQueryTokens(nn.Module):
    """Eq. (1): ``M`` learnable tokens ``LQ_i`` of width ``c_q`` read the stage's visual features.

    ``LQ'_i = LN(X + MLP(X))``, ``X = LN(LQ_i + W_o softmax((LQ_i + P) W_q (F_Vi W_k)^T / sqrt(d)) F_Vi W_v)``
    with a learnable position embedding ``P`` added to the queries (Table IV's "w/o PE" drops it).
    """

    def __init__(self, visual_dim: int, config: SBANetConfig, num_queries: int) -> None:
        super().__init__()
        dim = config.query_dim
        self.heads = config.query_heads
        self.tokens = nn.Parameter(torch.empty(num_queries, dim))
        self.pos_embed = nn.Parameter(torch.empty(num_queries, dim)) if config.query_pos_embed else None
        for p in (self.tokens, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(visual_dim, dim)
        self.to_v = nn.Linear(visual_dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.tail = TokenMLP(dim, config.fusion_dropout)

    def forward(self, visual: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """visual ``[B, H, W, C]`` -> tokens ``LQ'_i [B, M, c_q]`` and, if asked, their attention
        over pixels ``[B, M, H, W]`` (mean over heads)."""
        b, h, w, c = visual.shape
        pixels = visual.reshape(b, h * w, c)
        tokens = self.tokens.unsqueeze(0).expand(b, -1, -1)
        queries = tokens if self.pos_embed is None else tokens + self.pos_embed
        out, weights = multi_head_attention(
            self.to_q(queries), self.to_k(pixels), self.to_v(pixels), self.heads, need_weights
        )
        tokens = self.tail(tokens, self.proj(out))
        return tokens, None if weights is None else weights.view(b, -1, h, w)


class VisualSelfAttentionTokens(nn.Module):
    """Table IV "self-attention": every pixel is a token, refined by self-attention over all pixels."""

    def __init__(self, visual_dim: int, config: SBANetConfig) -> None:
        super().__init__()
        dim = config.query_dim
        self.heads = config.query_heads
        self.to_tokens = nn.Linear(visual_dim, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.tail = TokenMLP(dim, config.fusion_dropout)

    def forward(self, visual: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, None]:
        """visual ``[B, H, W, C]`` -> tokens ``[B, HW, c_q]``. No map is returned: an ``[HW, HW]``
        matrix at stage 1 is far too large to keep."""
        b, h, w, c = visual.shape
        tokens = self.to_tokens(visual.reshape(b, h * w, c))
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out, _ = multi_head_attention(q, k, v, self.heads, need_weights=False)
        return self.tail(tokens, self.proj(out)), None


class VisualTokens(nn.Module):
    """Table IV "cross-attention": no token summary; the words attend to every pixel directly."""

    def __init__(self, visual_dim: int, config: SBANetConfig) -> None:
        super().__init__()
        self.to_tokens = nn.Linear(visual_dim, config.query_dim)
        self.tail = TokenMLP(config.query_dim, config.fusion_dropout)

    def forward(self, visual: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, None]:
        """visual ``[B, H, W, C]`` -> tokens ``[B, HW, c_q]``."""
        b, h, w, c = visual.shape
        return self.tail(self.to_tokens(visual.reshape(b, h * w, c))), None


def build_query_tokens(config: SBANetConfig, visual_dim: int, stage: int) -> nn.Module:
    if config.query_mode == "learnable":
        return LearnableQueryTokens(visual_dim, config, config.queries_per_stage[stage])
    if config.query_mode == "self":
        return VisualSelfAttentionTokens(visual_dim, config)
    return VisualTokens(visual_dim, config)


class QueryTextAlignment(nn.Module):
    """Eq. (2)-(4): words align with the query tokens and the language features are updated.

    ``T = GELU(W_t F'_L(i-1))``, ``Q = GELU(W_q LQ'_i)`` (1x1 convs), ``R = softmax(T Q^T / sqrt(c_q)) Q``
    (each word attends over the tokens), ``R_i = LN(W_qt R)``, ``F'_Li = w_f(w_l(F'_L(i-1)) * R_i)``
    with ``w_l, w_f = 1x1 conv + ReLU``. Padded words are zeroed in the output.

    The paper writes ``w_qt`` as "1x1 conv + norm" without naming the norm; a LayerNorm over
    channels is used so padded words cannot leak into real ones (an InstanceNorm over words would).
    """

    def __init__(self, text_dim: int, query_dim: int) -> None:
        super().__init__()
        self.query_dim = query_dim
        self.proj_text = nn.Sequential(nn.Linear(text_dim, query_dim), nn.GELU())
        self.proj_query = nn.Sequential(nn.Linear(query_dim, query_dim), nn.GELU())
        self.w_qt = nn.Sequential(nn.Linear(query_dim, text_dim), nn.LayerNorm(text_dim))
        self.w_l = nn.Sequential(nn.Linear(text_dim, text_dim), nn.ReLU())
        self.w_f = nn.Sequential(nn.Linear(text_dim, text_dim), nn.ReLU())

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, tokens: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """text ``[B, L, D]``, text_mask ``[B, L]``, tokens ``[B, M, c_q]`` -> ``F'_Li [B, L, D]``.

        With ``need_weights``: ``alignment [B, L, M]`` (Eq. 3, rows over tokens) and
        ``word_relevance [B, L]``: the same scores normalised over the real words and averaged
        over tokens, i.e. how much of the tokens' attention each word would receive.
        """
        t = self.proj_text(text)
        q = self.proj_query(tokens)
        logits = torch.matmul(t, q.transpose(1, 2)) / math.sqrt(self.query_dim)  # [B, L, M]
        attn = torch.softmax(logits, dim=-1)
        relation = self.w_qt(torch.matmul(attn, q))  # R_i [B, L, D]
        mask = text_mask.to(text.dtype).unsqueeze(-1)
        updated = self.w_f(self.w_l(text) * relation) * mask
        if not need_weights:
            return updated, None
        word_logits = logits.masked_fill(~text_mask.bool().unsqueeze(-1), float("-inf"))
        relevance = torch.softmax(word_logits, dim=1).mean(dim=2)  # [B, L]
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
            self.alignment = QueryTextAlignment(text_dim, config.query_dim)
        else:
            self.query_tokens = self.alignment = None
        if config.dfs:
            self.dfs = DynamicFeatureSelection(dim, text_dim, config.dfs_windows, config.fusion_dropout)
            self.pwam = None
        else:
            self.dfs = None
            self.pwam = PWAM(dim, text_dim, config.fusion_dropout)
        self.gate = LanguageGate(dim) if has_gate else None

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_attention: bool = False
    ) -> StageOutput:
        """x ``[B, H, W, C]`` (the stage's blocks' output), text ``[B, L, D]``, text_mask ``[B, L]``."""
        attention: dict[str, torch.Tensor] = {}
        if self.query_tokens is not None:
            tokens, token_attn = self.query_tokens(x, need_weights=need_attention)
            text, align = self.alignment(text, text_mask, tokens, need_weights=need_attention)
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
