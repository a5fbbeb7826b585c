"""Dynamic feature selection (DFS), SBANet Sec. III-B, Eq. (5)-(7).

The stage's visual features are seen at several pooling windows: window 1 keeps the full
resolution (the "micro" level, local detail), larger windows average-pool the map (the "macro"
levels, context). Each branch is fused with the (updated) language by its own PWAM, brought back
to the full resolution and the branches are selected/mixed by a two-layer MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pwam import PWAM


class DynamicFeatureSelection(nn.Module):
    """``F'_Vi = LN(MLP([up(PWAM_w(LN(W_w pool_w(F_Vi)), F'_Li)) for w in windows]))``.

    Pooling uses ``kernel = stride = w`` with ``ceil_mode`` so no border pixel is dropped. The
    paper's "1x1 conv + norm" per branch uses a channel LayerNorm here (batch-size independent).
    The paper has three of them, one per pooled (macro) branch; the full-resolution branch
    (window 1) enters its PWAM as it is. ``project_micro=True`` gives it a projection too (what
    checkpoints written before this reading compute).
    A branch that pools a map down to a single cell contributes nothing (PWAM's instance norm
    of one pixel is zero): at 448x448 the coarsest case is stage 4 (14x14) at window 6 -> 3x3.
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        windows: tuple[int, ...],
        dropout: float = 0.0,
        project_micro: bool = False,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.windows = tuple(windows)
        self.branch_proj = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim)) if window > 1 or project_micro else nn.Identity()
            for window in self.windows
        )
        self.branch_pwam = nn.ModuleList(PWAM(dim, text_dim, dropout, activation) for _ in self.windows)
        self.select = nn.Sequential(
            nn.Linear(len(self.windows) * dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim)
        )

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``[B, H, W, C]``, text ``[B, L, D]``, text_mask ``[B, L]``.

        Returns ``F'_Vi [B, H, W, C]`` and the pixel-word attention of the finest branch
        ``[B, h, w, L]``.

        The selection MLP's first linear layer over the concatenated branches is computed as the
        sum of its per-branch blocks, each applied at the branch's own (pooled) resolution
        *before* the bilinear upsampling: both maps are linear and act on different axes, so
        ``W [up(b_1), ..., up(b_n)] = sum_i up(W_i b_i)`` exactly, without the ``n * C``-wide
        concatenation at full resolution.
        """
        h, w = x.shape[1:3]
        first = self.select[0]
        blocks = first.weight.split(x.shape[-1], dim=1)  # W_i [C, C] per branch
        selected = None
        finest_attn = None
        for window, proj, pwam, block in zip(self.windows, self.branch_proj, self.branch_pwam, blocks):
            y = x
            if window > 1:
                y = F.avg_pool2d(
                    x.permute(0, 3, 1, 2), window, window, ceil_mode=True, count_include_pad=False
                ).permute(0, 2, 3, 1)
            mm, attn = pwam(proj(y), text, text_mask)
            part = F.linear(mm, block)
            if part.shape[1:3] != (h, w):
                part = F.interpolate(part.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
                part = part.permute(0, 2, 3, 1)
            if finest_attn is None or attn.shape[1] > finest_attn.shape[1]:
                finest_attn = attn
            selected = part if selected is None else selected + part
        return self.select[1:](selected + first.bias), finest_attn
