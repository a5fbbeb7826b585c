"""LAVT's SimpleDecoding, unchanged by SBANet.

From the deepest scale up: bilinear upsample (align_corners=True, as LAVT) to the next scale,
concatenate, two ``Conv3x3 + BN + ReLU``; after the finest scale a ``Conv1x1`` to 2 classes at
1/4 resolution. :meth:`SBANet.forward` upsamples the logits to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU())


class SimpleDecoder(nn.Module):
    """stage_dims ``(C1, C2, C3, C4)``; hidden width ``decoder_dim`` (512 for Swin-B, LAVT's c4/2)."""

    def __init__(self, stage_dims: tuple[int, ...], hidden: int, num_classes: int = 2) -> None:
        super().__init__()
        c1, c2, c3, c4 = stage_dims
        self.fuse4 = nn.Sequential(conv_bn_relu(c4 + c3, hidden), conv_bn_relu(hidden, hidden))
        self.fuse3 = nn.Sequential(conv_bn_relu(hidden + c2, hidden), conv_bn_relu(hidden, hidden))
        self.fuse2 = nn.Sequential(conv_bn_relu(hidden + c1, hidden), conv_bn_relu(hidden, hidden))
        self.classifier = nn.Conv2d(hidden, num_classes, 1)

    @staticmethod
    def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([x, skip], dim=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: 4 maps ``[B, C_i, H_i, W_i]`` (strides 4..32) -> logits ``[B, 2, H_1, W_1]``."""
        c1, c2, c3, c4 = features
        x = self.fuse4(self._up_cat(c4, c3))
        x = self.fuse3(self._up_cat(x, c2))
        x = self.fuse2(self._up_cat(x, c1))
        return self.classifier(x)
