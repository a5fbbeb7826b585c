"""EfficientNet-Lite0 in plain PyTorch for inference start-up: timm's ``tf_efficientnet_lite0``
(stem, the 7 block groups; no head) with the same modules, parameter names and computation,
built without importing timm (whose import pulls torchvision and ``torch._dynamo``: seconds of a
small command's start-up).

TensorFlow's "same" padding, as timm's ``tf_`` models compute it: convolutions of stride 1 pad
``(k - 1) // 2`` on each side; those of stride 2 pad by the input's size, the extra pixel at the
bottom / right (:class:`Conv2dSame`). BatchNorm (eps 1e-3) is followed by ReLU6 where timm puts
an activation. Stochastic depth (``drop_path_rate``) grows linearly over the 16 blocks, as in
timm's builder. :class:`EfficientNetLite0Features` is the trunk; ImageNet weights go through timm
(:mod:`sbanet.modeling.visual_encoder`), a checkpoint's through ``load_state_dict``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STEM_WIDTH = 32
# tf_efficientnet_lite0's block groups: (expansion, kernel, stride, output width, repeats);
# expansion 1 is the depthwise-separable first block
LITE0_GROUPS = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3))
LITE0_GROUPS += ((6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """A strided convolution with TensorFlow's "same" padding (timm's ``Conv2dSame``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C', ceil(H / s), ceil(W / s)]``."""
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            pads.append(max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0))
        (ph, pw) = pads
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "same" padding (static for stride 1)."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm, then ``drop`` (identity) and ``act`` (ReLU6 or identity): timm's module of that
    name, whose two attributes :func:`sbanet.inference.fast.folded_efficientnet` keeps after folding."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: whole samples of a residual branch dropped (kept ones scaled up)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv + BN + ReLU6, pointwise conv + BN (the first block; no residual here as
    its widths differ)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, drop_path_rate: float) -> None:
        super().__init__()
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin, act=True)
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C', H / s, W / s]``."""
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return x + drop_path(out, self.drop_path_rate, self.training) if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: pointwise expansion, depthwise conv, pointwise
    projection (BN after each, ReLU6 after the first two), residual where the shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, drop_path_rate: float) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C', H / s, W / s]``."""
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(out))
        return x + drop_path(out, self.drop_path_rate, self.training) if self.has_skip else out


class EfficientNetLite0Features(nn.Module):
    """``conv_stem``, ``bn1`` and ``blocks`` of timm's ``tf_efficientnet_lite0`` (same keys)."""

    def __init__(self, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.conv_stem = conv(3, STEM_WIDTH, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_WIDTH, act=True)
        total = sum(group[-1] for group in LITE0_GROUPS)
        groups, cin, index = [], STEM_WIDTH, 0
        for expansion, kernel, stride, cout, repeats in LITE0_GROUPS:
            blocks = []
            for r in range(repeats):
                rate, s = drop_path_rate * index / total, stride if r == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparableConv(cin, cout, kernel, s, rate))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, s, expansion, rate))
                cin, index = cout, index + 1
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*groups)
