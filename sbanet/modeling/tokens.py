"""The tokens that meet the words in BAM (SBANet Sec. III-B, Eq. 1, and Table IV's variants).

Every variant maps one stage's visual features ``F_Vi [B, H, W, C_i]`` (and, for the word
self-attention variant, the words) to tokens ``[B, T, c_q]`` plus an optional key mask over them
(``[B, T]``, True = real token) that :class:`~sbanet.modeling.bam.QueryTextAlignment` honours:

* ``learnable`` (Eq. 1, the paper's choice): ``M`` learnable query tokens read the pixels;
* ``self`` (Table IV "self-attention"): self-attention over the words, no visual summary;
* ``cross`` (Table IV "cross-attention"): no summary, the words attend to every pixel;
* ``group`` (Table IV "group attention"): ``M`` learnable group tokens, every pixel assigned to
  one group by GroupViT's hard Gumbel-softmax (``group_assignment="hard"``, what the paper
  describes) or softly over the groups (``"soft"``), each token the mean of its pixels;
* ``pixel_self``: self-attention over all pixels, what checkpoints written with the first
  reading of the "self-attention" row compute.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SBANetConfig


class TokenOutput(NamedTuple):
    tokens: torch.Tensor  # [B, T, c_q]
    weights: torch.Tensor | None  # [B, M, H, W]: the tokens' attention over pixels, if asked
    mask: torch.Tensor | None  # [B, T]: True = a real token (None: all are)


def multi_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    need_weights: bool,
    scale: float | None = None,
    key_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention. q ``[B, M, C]``, k/v ``[B, N, C]`` -> ``[B, M, C]``.

    ``scale`` defaults to ``(C / heads) ** -0.5``; ``key_mask [B, N]`` (True = attend) hides keys.
    With ``need_weights`` the weights are computed explicitly and returned averaged over heads
    (``[B, M, N]``); otherwise the fused kernel runs and no ``[M, N]`` matrix is kept.
    """
    b, m, c = q.shape
    n = k.shape[1]
    scale = (c // heads) ** -0.5 if scale is None else scale
    q = q.view(b, m, heads, c // heads).transpose(1, 2)
    k = k.view(b, n, heads, c // heads).transpose(1, 2)
    v = v.view(b, n, heads, c // heads).transpose(1, 2)
    mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
    if need_weights:
        scores = q @ k.transpose(-2, -1) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = attn @ v
        weights = attn.mean(dim=1)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        weights = None
    return out.transpose(1, 2).reshape(b, m, c), weights


def feed_forward(dim: int, dropout: float = 0.0) -> nn.Sequential:
    """The transformer MLP ``Linear(c, 4c) -> GELU -> Dropout -> Linear(4c, c)``."""
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))


class TokenMLP(nn.Module):
    """Post-norm transformer tail shared by the token variants: ``y = LN(x + u)``, ``LN(y + MLP(y))``."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, update: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x if update is None else x + update)
        return self.norm2(y + self.mlp(y))


class LearnableQueryTokens(nn.Module):
    """Eq. (1): ``M`` learnable tokens ``LQ_i`` of width ``c_q`` read the stage's visual features.

    ``bam_attention="single"`` (the paper): ``Q = LN(W_q (LQ_i + P))``, ``K = LN(W_k F_Vi)``,
    ``V = LN(W_v F_Vi)`` ("linear projection and normalization"), ``X = softmax(Q K^T / sqrt(c_i)) V``
    with ``c_i`` the stage's channel width, and ``LQ'_i = LN(X + MLP(X))`` ("MLP and LN").

    ``bam_attention="multihead"``: ``query_heads`` heads scaled by ``sqrt(c_q / heads)``, no
    normalisation, ``X = LN(LQ_i + W_o attn)``, ``LQ'_i = LN(X + MLP(X))``.

    ``P`` is a learnable position embedding added to the queries (Table IV's "w/o PE" drops it).
    """

    def __init__(self, visual_dim: int, config: SBANetConfig, num_queries: int) -> None:
        super().__init__()
        dim = config.query_dim
        self.single = config.bam_attention == "single"
        self.heads = 1 if self.single else config.query_heads
        self.scale = visual_dim**-0.5 if self.single else None
        self.tokens = nn.Parameter(torch.empty(num_queries, dim))
        self.pos_embed = nn.Parameter(torch.empty(num_queries, dim)) if config.query_pos_embed else None
        for p in (self.tokens, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(visual_dim, dim)
        self.to_v = nn.Linear(visual_dim, dim)
        if self.single:
            self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(dim) for _ in range(3))
            self.mlp = feed_forward(dim, config.fusion_dropout)
            self.norm = nn.LayerNorm(dim)
        else:
            self.proj = nn.Linear(dim, dim)
            self.tail = TokenMLP(dim, config.fusion_dropout)

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_weights: bool = False
    ) -> TokenOutput:
        """visual ``[B, H, W, C]`` -> tokens ``LQ'_i [B, M, c_q]`` and, if asked, their attention
        over pixels ``[B, M, H, W]`` (mean over heads); no token mask."""
        b, h, w, c = visual.shape
        pixels = visual.reshape(b, h * w, c)
        tokens = self.tokens.unsqueeze(0).expand(b, -1, -1)
        queries = tokens if self.pos_embed is None else tokens + self.pos_embed
        q, k, v = self.to_q(queries), self.to_k(pixels), self.to_v(pixels)
        if self.single:
            q, k, v = self.norm_q(q), self.norm_k(k), self.norm_v(v)
        out, weights = multi_head_attention(q, k, v, self.heads, need_weights, scale=self.scale)
        if self.single:
            tokens = self.norm(out + self.mlp(out))
        else:
            tokens = self.tail(tokens, self.proj(out))
        return TokenOutput(tokens, None if weights is None else weights.view(b, -1, h, w), None)


def hard_group_assignment(logits: torch.Tensor, training: bool) -> torch.Tensor:
    """GroupViT's hard assignment over the groups (dim 1 of ``logits [B, M, N]``).

    Training: Gumbel noise is added and the one-hot of the argmax is returned with the softmax's
    gradient (straight-through Gumbel-softmax, ``tau = 1``); eval: the one-hot of the argmax of
    the logits (GroupViT samples no noise at inference). ``[B, M, N]`` with one 1 per column.
    """
    if training:
        return F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1)
    index = logits.argmax(dim=1, keepdim=True)
    return torch.zeros_like(logits).scatter_(1, index, 1.0)


class GroupTokens(nn.Module):
    """Table IV "group attention" (GroupViT's grouping block, "modified ... for updating
    linguistic features", paper lines 249 and 265): ``M`` learnable group tokens; each pixel is
    assigned to the groups and each group token becomes the assignment-weighted mean of its
    pixels' values (GroupViT: ``A / (sum_pixels A + 1)``), then ``LN(X + MLP(X))``.

    ``group_assignment="hard"``: GroupViT's straight-through Gumbel-softmax one-hot (the paper's
    "non-differentiable assignment with Gumbel-softmax"); ``"soft"``: a softmax over the groups,
    each group normalised over its pixels (this code's first reading). Returns the assignment
    ``[B, M, H, W]`` normalised over pixels (an empty group's row is 0).
    """

    def __init__(self, visual_dim: int, config: SBANetConfig, num_queries: int) -> None:
        super().__init__()
        dim = config.query_dim
        self.scale = dim**-0.5
        self.hard = config.group_assignment == "hard"
        self.tokens = nn.Parameter(torch.empty(num_queries, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(visual_dim, dim)
        self.to_v = nn.Linear(visual_dim, dim)
        self.norm_q, self.norm_k = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, config.fusion_dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_weights: bool = False
    ) -> TokenOutput:
        """visual ``[B, H, W, C]`` -> group tokens ``[B, M, c_q]``."""
        b, h, w, c = visual.shape
        pixels = visual.reshape(b, h * w, c)
        q = self.norm_q(self.to_q(self.tokens)).expand(b, -1, -1)
        k = self.norm_k(self.to_k(pixels))
        logits = (q @ k.transpose(1, 2)) * self.scale  # [B, M, HW]
        if self.hard:
            assign = hard_group_assignment(logits, self.training)
            assign = assign / (assign.sum(dim=2, keepdim=True) + 1.0)  # GroupViT's sum_assign
        else:
            assign = torch.softmax(logits, dim=1)  # over groups
            assign = assign / assign.sum(dim=2, keepdim=True).clamp_min(1e-6)  # mean over each group's pixels
        out = assign @ self.to_v(pixels)
        tokens = self.norm(out + self.mlp(out))
        if not need_weights:
            return TokenOutput(tokens, None, None)
        shares = assign / assign.sum(dim=2, keepdim=True).clamp_min(1e-12)  # each group's pixels sum to 1
        return TokenOutput(tokens, shares.view(b, -1, h, w), None)


class SelfAttentionTokens(nn.Module):
    """Tokens refined by self-attention among themselves: the words (``over_words``, Table IV
    "self-attention", padding hidden; the words then align with these tokens, Eq. 2-4) or every
    pixel (``query_mode="pixel_self"``)."""

    def __init__(self, source_dim: int, config: SBANetConfig, over_words: bool) -> None:
        super().__init__()
        dim = config.query_dim
        self.over_words = over_words
        self.heads = config.query_heads
        self.to_tokens = nn.Linear(source_dim, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.tail = TokenMLP(dim, config.fusion_dropout)

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_weights: bool = False
    ) -> TokenOutput:
        """Words: text ``[B, L, D]`` -> tokens ``[B, L, c_q]`` with the mask ``[B, L]``. Pixels:
        visual ``[B, H, W, C]`` -> ``[B, HW, c_q]``, no map (``[HW, HW]`` at stage 1 is far too
        large to keep)."""
        source = text if self.over_words else visual.reshape(visual.shape[0], -1, visual.shape[-1])
        mask = text_mask.bool() if self.over_words else None
        tokens = self.to_tokens(source)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out, _ = multi_head_attention(q, k, v, self.heads, need_weights=False, key_mask=mask)
        return TokenOutput(self.tail(tokens, self.proj(out)), None, mask)


class VisualTokens(nn.Module):
    """Table IV "cross-attention": no token summary; the words attend to every pixel directly."""

    def __init__(self, visual_dim: int, config: SBANetConfig) -> None:
        super().__init__()
        self.to_tokens = nn.Linear(visual_dim, config.query_dim)
        self.tail = TokenMLP(config.query_dim, config.fusion_dropout)

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, need_weights: bool = False
    ) -> TokenOutput:
        """visual ``[B, H, W, C]`` -> tokens ``[B, HW, c_q]``."""
        b, h, w, c = visual.shape
        return TokenOutput(self.tail(self.to_tokens(visual.reshape(b, h * w, c))), None, None)


def build_query_tokens(config: SBANetConfig, visual_dim: int, stage: int) -> nn.Module:
    """The token variant ``config.query_mode`` names, for stage ``stage`` (width ``visual_dim``)."""
    if config.query_mode == "learnable":
        return LearnableQueryTokens(visual_dim, config, config.queries_per_stage[stage])
    if config.query_mode == "group":
        return GroupTokens(visual_dim, config, config.queries_per_stage[stage])
    if config.query_mode in ("self", "pixel_self"):
        over_words = config.query_mode == "self"
        return SelfAttentionTokens(config.text_dim if over_words else visual_dim, config, over_words)
    return VisualTokens(visual_dim, config)
