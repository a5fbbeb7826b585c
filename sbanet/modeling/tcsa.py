"""Text-conditioned channel and spatial aggregator (TCSA), SBANet Sec. III-C, Eq. (8)-(11).

TCSA sits between the encoder and the decoder and lets the four scales exchange information
under the guidance of the final language features ``F'_L4`` (equations numbered as the paper's):

* ``F_Lg = LN(MLP(F'_L4))`` (a two-layer MLP with LN); each scale ``i`` is layer-normed and
  average-pooled to the same ``m`` patches (``T_i``); ``F_C = [T_1, ..., T_4, F_Lg]`` along
  channels (width ``c_c``).
* Eq. (8): ``Q_Ci = DConv_C(T_i)``, ``K_C = DConv_C(F_C)``, ``V_C = DConv_C(F_C)``, 1x1 depthwise
  convolutions (a per-channel scale and bias).
* Eq. (9): channel attention ``softmax(Q_Ci^T K_C / sqrt(c_c)) V_C^T``, over ``F_C``'s channels,
  then a depthwise convolution on the result.
* Eq. (10): the spatial branch runs on the channel branch's outputs: "we employ depth-wise
  convolutions and reshape the outputs before fed into spatial attentions. For spatial
  attentions, we also apply the layer normalization and concatenation to the reshaped
  features": ``Q_S, K_S`` from the layer-normed concatenation of the channel-refined ``T'_i``
  (and ``F_Lg``), ``V_Si`` from each ``T'_i`` (``tcsa_order="sequential"``, the default).
  ``tcsa_order="parallel"`` is this code's first reading, kept for the models trained with it:
  both branches read the same ``F_C``, whose scales are pooled first and normed after.
* Eq. (11): spatial attention, ``n_h`` heads scaled by ``sqrt(c_c / n_h)``, then a depthwise
  convolution on the result.
* Line 154 of the paper's text: "we reshape the outputs and apply depth-wise convolutions before
  decoding": each scale's patch grid goes through a 1x1 depthwise convolution, is upsampled
  bilinearly to the scale's resolution and added to it (``tcsa_reconstruct="depthwise"``).

Where the paper is silent (docs/training.md, "Fidelity to the paper", lists each choice): how
the word features ``[L, d]`` join the ``m`` patches (here: ``F_Lg`` is pooled over the real
words, a masked mean, and the same vector laid over every patch); that each attention's result
is added to its input (residual updates of ``T_i``); that the upsampled result is added to the
scale instead of replacing it. Options keep this code's first reading, which followed
UCTransNet's channel transformer (CCT): ``tcsa_concat_norm`` (a LayerNorm over ``F_C``),
``tcsa_ffn`` (a per-scale LN + MLP block with residual) and ``tcsa_reconstruct="conv_bn_relu"``
(upsample, then ``1x1 conv + BN + ReLU``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SBANetConfig


class DepthwiseConv1x1(nn.Module):
    """A 1x1 depthwise convolution over channels-last tokens: a per-channel scale and bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[..., C]`` -> ``x * w + b``."""
        return x * self.weight + self.bias


def masked_mean(text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real words. text ``[B, L, D]``, text_mask ``[B, L]`` -> ``[B, D]``."""
    mask = text_mask.to(text.dtype).unsqueeze(-1)
    return (text * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class TextConditionedAggregator(nn.Module):
    """TCSA. Table V's variants: ``tcsa_channel`` / ``tcsa_spatial`` only, ``tcsa_text=False``."""

    def __init__(self, config: SBANetConfig) -> None:
        super().__init__()
        dims = config.stage_dims
        concat_dim = config.tcsa_concat_dim
        self.grid = config.tcsa_grid
        self.heads = config.tcsa_heads
        self.concat_dim = concat_dim
        self.text_mlp = (
            nn.Sequential(
                nn.Linear(config.text_dim, config.tcsa_text_dim),
                nn.GELU(),
                nn.Linear(config.tcsa_text_dim, config.tcsa_text_dim),
                nn.LayerNorm(config.tcsa_text_dim),
            )
            if config.tcsa_text
            else None
        )
        self.scale_norms = nn.ModuleList(nn.LayerNorm(c) for c in dims)
        self.concat_norm = nn.LayerNorm(concat_dim) if config.tcsa_concat_norm else nn.Identity()
        self.channel = config.tcsa_channel
        if self.channel:
            self.channel_q = nn.ModuleList(DepthwiseConv1x1(c) for c in dims)
            self.channel_k = DepthwiseConv1x1(concat_dim)
            self.channel_v = DepthwiseConv1x1(concat_dim)
            self.channel_out = nn.ModuleList(DepthwiseConv1x1(c) for c in dims)
        self.sequential = config.tcsa_order == "sequential"
        self.spatial = config.tcsa_spatial
        if self.spatial and self.sequential:  # Eq. (10)'s own LN + concatenation
            self.spatial_norms = nn.ModuleList(nn.LayerNorm(c) for c in dims)
            self.spatial_concat_norm = nn.LayerNorm(concat_dim) if config.tcsa_concat_norm else nn.Identity()
        if self.spatial:
            self.spatial_q = DepthwiseConv1x1(concat_dim)
            self.spatial_k = DepthwiseConv1x1(concat_dim)
            self.spatial_v = nn.ModuleList(DepthwiseConv1x1(c) for c in dims)
            self.spatial_out = nn.ModuleList(DepthwiseConv1x1(c) for c in dims)
        if config.tcsa_ffn:
            self.ffn_norms = nn.ModuleList(nn.LayerNorm(c) for c in dims)
            self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)) for c in dims)
        else:
            self.ffn_norms = self.ffns = None
        self.depthwise_out = config.tcsa_reconstruct == "depthwise"
        self.reconstruct = nn.ModuleList(
            DepthwiseConv1x1(c)
            if self.depthwise_out
            else nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
            for c in dims
        )

    def grid_size(self, features: list[torch.Tensor]) -> tuple[int, int]:
        """The patch grid: ``tcsa_grid`` per side, or the coarsest scale's size if smaller."""
        h, w = features[-1].shape[1:3]
        return min(self.grid, h), min(self.grid, w)

    def forward(
        self,
        features: list[torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor,
        need_attention: bool = False,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
        """features: per scale ``[B, H_i, W_i, C_i]``; text ``F'_L4 [B, L, D]``; text_mask ``[B, L]``.

        Returns the refined features (same shapes) and, if asked, ``spatial [B, n_h, m, m]``
        (Eq. 11's attention, one map shared by all scales) with ``grid`` = (gh, gw).
        """
        gh, gw = self.grid_size(features)
        pool = lambda f: F.adaptive_avg_pool2d(f.permute(0, 3, 1, 2), (gh, gw)).flatten(2).transpose(1, 2)  # noqa: E731
        if self.sequential:  # Eq. (8): normalise each scale, then pool (concatenation commutes)
            tokens = [pool(norm(f)) for f, norm in zip(features, self.scale_norms)]  # T_i [B, m, C_i]
        else:
            tokens = [norm(pool(f)) for f, norm in zip(features, self.scale_norms)]
        text_part = []
        if self.text_mlp is not None:  # F_Lg
            global_text = self.text_mlp(masked_mean(text, text_mask))
            text_part.append(global_text.unsqueeze(1).expand(-1, gh * gw, -1))
        f_c = self.concat_norm(torch.cat(tokens + text_part, dim=-1))  # F_C [B, m, c_c]

        if self.channel:  # Eq. (8)-(9)
            k = self.channel_k(f_c)
            v = self.channel_v(f_c)
            updated = []
            for t, to_q, to_out in zip(tokens, self.channel_q, self.channel_out):
                attn = torch.softmax(to_q(t).transpose(1, 2) @ k / math.sqrt(self.concat_dim), dim=-1)
                updated.append(t + to_out((attn @ v.transpose(1, 2)).transpose(1, 2)))  # [B, m, C_i]
            tokens = updated

        attention = None
        if self.spatial:  # Eq. (10)-(11)
            if self.sequential:  # queries and keys from the channel branch's outputs
                normed = [norm(t) for t, norm in zip(tokens, self.spatial_norms)]
                f_c = self.spatial_concat_norm(torch.cat(normed + text_part, dim=-1))
            b, m, _ = f_c.shape
            head_dim = self.concat_dim // self.heads
            q = self.spatial_q(f_c).view(b, m, self.heads, head_dim).transpose(1, 2)
            k = self.spatial_k(f_c).view(b, m, self.heads, head_dim).transpose(1, 2)
            attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)  # [B, n_h, m, m]
            updated = []
            for t, to_v, to_out in zip(tokens, self.spatial_v, self.spatial_out):
                c = t.shape[-1]
                v = to_v(t).view(b, m, self.heads, c // self.heads).transpose(1, 2)
                updated.append(t + to_out((attn @ v).transpose(1, 2).reshape(b, m, c)))
            tokens = updated
            if need_attention:
                attention = {"spatial": attn, "grid": torch.tensor([gh, gw])}

        outputs = []  # line 154: reshape, depthwise convolutions, back to each scale
        for i, (f, t, recon) in enumerate(zip(features, tokens, self.reconstruct)):
            if self.ffns is not None:
                t = t + self.ffns[i](self.ffn_norms[i](t))
            if self.depthwise_out:  # per-pixel affine: commutes with the bilinear upsampling
                grid = recon(t).transpose(1, 2).reshape(t.shape[0], -1, gh, gw)
                out = F.interpolate(grid, size=f.shape[1:3], mode="bilinear", align_corners=False)
            else:
                grid = t.transpose(1, 2).reshape(t.shape[0], -1, gh, gw)
                out = self._reconstruct(recon, grid, f.shape[1:3])
            outputs.append(f + out.permute(0, 2, 3, 1))
        return outputs, attention

    def _reconstruct(self, recon: nn.Sequential, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``ReLU(BN(Conv1x1(up(grid))))`` (``tcsa_reconstruct="conv_bn_relu"``):
        ``[B, C, gh, gw] -> [B, C, *size]``.

        In eval mode the 1x1 conv and BN are per-pixel affine maps, which commute with bilinear
        upsampling (its weights sum to 1), so they run on the small grid (m pixels instead of
        ``H_i W_i``): same result, a fraction of the work. Training keeps the order, since BN's
        batch statistics are those of the upsampled map.
        """
        conv, bn, relu = recon
        if self.training:
            return relu(bn(conv(F.interpolate(grid, size=size, mode="bilinear", align_corners=False))))
        return relu(F.interpolate(bn(conv(grid)), size=size, mode="bilinear", align_corners=False))
