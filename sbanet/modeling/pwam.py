"""Pixel-word attention module (PWAM) and language gate, as LAVT (see :class:`PWAM` for the one
switch, its output activation).

LAVT writes these with ``Conv1d(kernel_size=1)`` over ``[B, C, N]``; here they are ``nn.Linear``
over channels-last ``[B, N, C]`` (the same affine map, without the transposes), and
``InstanceNorm1d`` (no affine, eps 1e-5) becomes a normalisation over the token axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def instance_norm_tokens(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``nn.InstanceNorm1d`` applied to ``x.transpose(1, 2)``: normalise each channel over tokens.

    x: ``[B, N, C]`` -> ``[B, N, C]``. Biased variance, no affine parameters (LAVT's default).
    """
    var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class PixelWordAttention(nn.Module):
    """LAVT's spatial image-language attention: every pixel attends over the words.

    ``Q = IN(W_q x)``, ``K = (W_k l) * mask``, ``V = (W_v l) * mask``,
    ``A = softmax(Q K^T / sqrt(c_k))`` with padded words set to -1e4 before the softmax,
    ``out = IN(W_o (A V))``.
    """

    def __init__(self, visual_dim: int, text_dim: int, key_dim: int, value_dim: int, out_dim: int) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.f_query = nn.Linear(visual_dim, key_dim)
        self.f_key = nn.Linear(text_dim, key_dim)
        self.f_value = nn.Linear(text_dim, value_dim)
        self.f_out = nn.Linear(value_dim, out_dim)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``[B, N, C_v]`` pixels; text: ``[B, L, D]``; text_mask: ``[B, L]`` (1 = word, 0 = pad).

        Returns ``out [B, N, C_out]`` and the attention ``[B, N, L]`` (rows sum to 1 over words).
        """
        mask = text_mask.to(x.dtype).unsqueeze(-1)  # [B, L, 1]
        query = instance_norm_tokens(self.f_query(x))  # [B, N, Ck]
        key = self.f_key(text) * mask  # [B, L, Ck]
        value = self.f_value(text) * mask  # [B, L, Cv]
        sim = torch.matmul(query, key.transpose(1, 2)) * self.key_dim**-0.5  # [B, N, L]
        sim = sim + (1e4 * mask.transpose(1, 2) - 1e4)  # padded words -> -1e4
        attn = F.softmax(sim, dim=-1)
        out = torch.matmul(attn, value)  # [B, N, Cv]
        return instance_norm_tokens(self.f_out(out)), attn


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class PWAM(nn.Module):
    """LAVT's PWAM (LAVT Sec. 3.2): ``mm = act(W_mm(GELU(W_v x) * PixelWordAttention(x, l)))``.

    ``activation`` is that of the multi-modal projection ``W_mm``: ``"gelu"`` in LAVT's code,
    ``"relu"`` in the SBANet paper's description of PWAM ("1x1 convolution and ReLU", Sec.
    III-B1; ``SBANetConfig.pwam_activation``). The weights are the same either way.
    """

    def __init__(self, dim: int, text_dim: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"PWAM activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.vis_project = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.attention = PixelWordAttention(dim, text_dim, dim, dim, dim)
        self.project_mm = nn.Sequential(nn.Linear(dim, dim), ACTIVATIONS[activation](), nn.Dropout(dropout))

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``[B, H, W, C]`` (or ``[B, N, C]``); text ``[B, L, D]``; text_mask ``[B, L]``.

        Returns the multimodal features ``mm`` in x's shape and the pixel-word attention in
        x's spatial shape with the words last (``[B, H, W, L]`` or ``[B, N, L]``).
        """
        shape = x.shape
        tokens = x.reshape(shape[0], -1, shape[-1])
        vis = self.vis_project(tokens)
        lang, attn = self.attention(tokens, text, text_mask)
        mm = self.project_mm(vis * lang)
        return mm.reshape(shape), attn.reshape(*shape[:-1], attn.shape[-1])


class LanguageGate(nn.Module):
    """LAVT's language pathway gate: ``Linear -> ReLU -> Linear -> Tanh`` without biases.

    The stage output is ``x + gate(mm) * mm``. The weights start as LAVT's do: its
    ``init_weights`` draws every linear layer of the backbone from ``trunc_normal(std=0.02)``
    after the gate's own zero init, so the gate starts small but not closed.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh()
        )
        for layer in (self.gate[0], self.gate[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)

    def forward(self, x: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        """x, mm: ``[..., C]`` -> ``x + gate(mm) * mm``."""
        return x + self.gate(mm) * mm
