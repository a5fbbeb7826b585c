"""Scale augmentation: the same ground seen at another ground sampling distance.

A user's upload is resized whole to the model's input size, so a 0.3 m orthophoto and a 3 m
satellite scene reach the model at scales ten times apart; a GeoTIFF is resampled to the scale
the model learned (:mod:`sbanet.inference`'s GSD rule), a plain image is not. :func:`rescale`
draws one scale factor per training item, log-uniform in ``[low, high]``, on the resized
``[3, S, S]`` image and its ``[S, S]`` mask of :class:`sbanet.data.transforms.ReferringDataset`:

* factor ``f >= 1`` (closer): a random ``S / f`` square is cut out and enlarged to ``S``;
* factor ``f < 1`` (farther): the item is shrunk to ``S * f`` and the square filled by mirroring
  it (a 3 x 3 mosaic of mirrored copies, cut at a random offset), so no border or padding value
  appears that real imagery never has.

Only two kinds of referent keep their truth under a crop and a mirror: a class ("the water":
every water pixel of the new square is still the water, and none left is an empty mask) and an
absent class (still absent). Instance rules ("the largest building", "the road on the left")
would name another region after either, so :class:`~sbanet.data.transforms.ReferringDataset`
rescales only the samples whose converter rule is in ``SCALE_RULES``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALE_RULES: tuple[str, ...] = ("class", "absent")
MIN_FACTOR = 1.0 / 3.0  # a 3 x 3 mosaic of the shrunk item must still cover the square


def check_scale_range(scale: tuple[float, float] | list[float] | None) -> tuple[float, float] | None:
    """``scale`` as a ``(low, high)`` pair of factors with ``1/3 <= low <= high`` (None: off)."""
    if scale is None:
        return None
    if len(scale) != 2:
        raise ValueError(f"scale must be [low, high] factors, got {scale!r}")
    low, high = float(scale[0]), float(scale[1])
    if not MIN_FACTOR <= low <= high:
        raise ValueError(f"scale must satisfy {MIN_FACTOR:.3f} <= low <= high, got [{low}, {high}]")
    return low, high


def draw_factor(low: float, high: float) -> float:
    """A factor log-uniform in ``[low, high]`` (torch's global RNG, as the flips): halving and
    doubling are equally likely."""
    u = float(torch.rand(()))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _offset(room: int) -> int:
    return int(torch.randint(room + 1, ())) if room > 0 else 0


def mirror_mosaic(x: torch.Tensor) -> torch.Tensor:
    """``[..., h, w]`` -> ``[..., 3h, 3w]``: ``x`` in the middle, mirrored copies around it
    (each edge meets its own reflection, as on a folded map)."""
    row = torch.cat([x.flip(-1), x, x.flip(-1)], dim=-1)
    return torch.cat([row.flip(-2), row, row.flip(-2)], dim=-2)


def rescale(image: torch.Tensor, mask: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` ``float32 [3, S, S]`` and ``mask`` ``int64 [S, S]`` seen ``factor`` times closer
    (new tensors, same shapes; the inputs are not modified: the dataset caches the image)."""
    if image.ndim != 3 or mask.shape != image.shape[-2:]:
        shapes = f"{tuple(image.shape)}, {tuple(mask.shape)}"
        raise ValueError(f"rescale needs a [3, S, S] image and an [S, S] mask, got {shapes}")
    if factor < MIN_FACTOR:
        raise ValueError(f"scale factor {factor} is below {MIN_FACTOR:.3f}: the mirror mosaic cannot fill the image")
    height, width = image.shape[-2:]
    if factor >= 1.0:
        side = max(1, round(width / factor))
        y, x = _offset(height - side), _offset(width - side)
        crop = image[None, :, y : y + side, x : x + side]
        target = mask[None, None, y : y + side, x : x + side].float()
        image = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(target, size=(height, width), mode="nearest")[0, 0].long()
        return image, mask
    # rounded up: three copies must cover the square at the smallest factor
    small_h, small_w = math.ceil(height * factor), math.ceil(width * factor)
    small = F.interpolate(image[None], size=(small_h, small_w), mode="bilinear", antialias=True, align_corners=False)[0]
    # the mask shrunk as coverage, then thresholded: a thin road keeps its pixels where it
    # covers half of one, rather than vanishing under nearest-neighbour sampling
    cover = F.interpolate(mask[None, None].float(), size=(small_h, small_w), mode="area")[0, 0]
    small_mask = (cover >= 0.5).long()
    y, x = _offset(3 * small_h - height), _offset(3 * small_w - width)
    image = mirror_mosaic(small)[:, y : y + height, x : x + width].contiguous()
    mask = mirror_mosaic(small_mask)[y : y + height, x : x + width].contiguous()
    return image, mask
