"""Photometric augmentation: the same ground under another sensor, season, exposure or encoder.

Users bring imagery from other satellites and cameras: warmer or colder colour, other contrast
and exposure, a gamma curve, softer optics, heavy JPEG, or bands in BGR order. A model trained on
one source learns its colours as part of what "the water" looks like. :func:`photometric` draws
such a change for one training image (torch's global RNG, as the flips of
:mod:`sbanet.data.augment`), on the normalised ``float32 [3, S, S]`` tensor of
:class:`sbanet.data.transforms.ReferringDataset`; the mask and the words are unchanged.

Each item: per-channel gain (colour balance, 0.85-1.15), brightness (0.7-1.3), contrast
(0.7-1.3), saturation (0.6-1.4), gamma (0.7-1.4); with probability 0.2 a 3 x 3 blur, 0.2 JPEG
at quality 30-90, 0.1 the channels reversed (RGB <-> BGR).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

P_BLUR, P_JPEG, P_CHANNELS = 0.2, 0.2, 0.1
_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _jpeg(rgb: torch.Tensor, quality: int) -> torch.Tensor:
    """``float32 [3, H, W]`` in [0, 1] through a JPEG round trip at ``quality``."""
    import cv2

    array = (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", array[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return rgb
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).float() / 255.0


def photometric(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One random photometric change of a normalised image ``float32 [3, S, S]`` (a new tensor;
    ``image`` is not modified: the dataset caches it)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"photometric augmentation needs a [3, H, W] image, got shape {tuple(image.shape)}")
    m = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    rgb = (image * s + m).clamp(0.0, 1.0)
    gains = torch.tensor([_uniform(0.85, 1.15) for _ in range(3)], dtype=image.dtype).view(3, 1, 1)
    rgb = rgb * gains * _uniform(0.7, 1.3)
    gray = (rgb * _GRAY.to(image.dtype)).sum(0, keepdim=True)
    rgb = (rgb - gray.mean()) * _uniform(0.7, 1.3) + gray.mean()  # contrast around the mean level
    gray = (rgb * _GRAY.to(image.dtype)).sum(0, keepdim=True)
    rgb = (gray + (rgb - gray) * _uniform(0.6, 1.4)).clamp(0.0, 1.0)  # saturation
    rgb = rgb ** _uniform(0.7, 1.4)
    if float(torch.rand(())) < P_BLUR:
        kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype)
        kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(3, 1, 3, 3)
        rgb = F.conv2d(F.pad(rgb[None], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)[0]
    if float(torch.rand(())) < P_JPEG:
        rgb = _jpeg(rgb, int(_uniform(30, 90)))
    if float(torch.rand(())) < P_CHANNELS:
        rgb = rgb.flip(0)
    return (rgb - m) / s
