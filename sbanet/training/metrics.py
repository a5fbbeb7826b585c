"""Referring segmentation metrics, exactly the reference protocol (LAVT / RMSIN ``test.py``).

Per sample, the intersection ``I`` and union ``U`` of the predicted and target masks on the
model's input grid (``S x S``; the target is the mask resized with nearest neighbour, as the
dataset gives it). ``IoU = I / U``, and ``IoU = 0`` when ``U = 0`` (both masks empty): such a
sample stays in every denominator. Over a split, where every sentence of every ref is a sample:

* ``mIoU`` = mean of the per-sample IoUs;
* ``oIoU`` = ``sum(I) / sum(U)`` (overall IoU: large objects weigh more);
* ``Pr@k`` = fraction of samples with ``IoU >= k`` for k in 0.5, 0.6, 0.7, 0.8, 0.9.

Values are fractions in [0, 1] (the papers print them x 100). :meth:`SegmentationMetrics.
update_original_resolution` is the option that scores at each image's original size instead:
the probability is upsampled bilinearly to the original mask's size before thresholding.

The accumulator's state is a dict of float64 sum tensors, so processes merge by summing them
(:meth:`SegmentationMetrics.all_reduce` under ``torch.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PR_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks ``[B, H, W]`` (bool or {0, 1}) -> ``I``, ``U`` as ``int64 [B]``."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be [B, H, W], got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.bool(), target.bool()
    intersection = (pred & target).flatten(1).sum(1)
    union = (pred | target).flatten(1).sum(1)
    return intersection, union


def iou_from_counts(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """``I / U`` per sample as float64, 0 where ``U = 0`` (LAVT's ``computeIoU``)."""
    intersection, union = intersection.double(), union.double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``bool [H, W]`` masks by this module's rule (0 when both are
    empty): what the app's examples, the default model's tests and reports score a mask with."""
    counts = intersection_union(torch.from_numpy(np.asarray(a))[None], torch.from_numpy(np.asarray(b))[None])
    return float(iou_from_counts(*counts)[0])


def upsample_probability(probability: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Foreground probability ``[S, S]`` or ``[B, S, S]`` -> ``[..., H, W]`` (bilinear)."""
    squeeze = probability.dim() == 2
    p = probability.float()[None] if squeeze else probability.float()
    out = F.interpolate(p[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return out[0] if squeeze else out


def original_resolution_counts(
    probability: torch.Tensor, masks: Sequence[np.ndarray | torch.Tensor], threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground probability ``[B, S, S]`` and each sample's original mask ``[H_b, W_b]`` ->
    ``I``, ``U`` ``int64 [B]``, the probability upsampled to ``H_b x W_b`` and thresholded."""
    if probability.dim() != 3 or len(masks) != probability.shape[0]:
        raise ValueError(f"need probability [B, S, S] and B masks, got {tuple(probability.shape)}, {len(masks)}")
    counts = []
    for p, mask in zip(probability, masks):
        target = torch.as_tensor(np.asarray(mask), device=p.device).bool()
        if target.dim() != 2:
            raise ValueError(f"an original mask must be [H, W], got shape {tuple(target.shape)}")
        pred = upsample_probability(p, target.shape) > threshold
        counts.append(intersection_union(pred[None], target[None]))
    return torch.cat([c[0] for c in counts]), torch.cat([c[1] for c in counts])


class SegmentationMetrics:
    """Accumulates I, U and IoU per batch; ``compute()`` gives mIoU, oIoU, Pr@k and per category.

    ``categories``: the names tracked for per-category mIoU (fixed up front, so every process
    holds state of the same shape). Samples whose category is ``None`` count in the overall
    metrics only.
    """

    def __init__(self, categories: Sequence[str] = (), thresholds: Sequence[float] = PR_THRESHOLDS) -> None:
        self.categories = list(dict.fromkeys(categories))
        self.thresholds = tuple(float(k) for k in thresholds)
        if any(not 0.0 <= k <= 1.0 for k in self.thresholds):
            raise ValueError(f"precision thresholds must be in [0, 1], got {self.thresholds}")
        self._category_index = {name: i for i, name in enumerate(self.categories)}
        self.reset()

    def reset(self) -> None:
        n, c = len(self.thresholds), len(self.categories)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.state: dict[str, torch.Tensor] = {
            "count": zeros(1),
            "iou_sum": zeros(1),
            "intersection": zeros(1),
            "union": zeros(1),
            "hits": zeros(n),
            "category_count": zeros(c),
            "category_iou_sum": zeros(c),
        }

    # --- accumulation ------------------------------------------------------------------------
    def update(
        self, pred: torch.Tensor, target: torch.Tensor, categories: Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Predicted and target masks ``[B, S, S]`` on the input grid (e.g. ``logits.argmax(1)``).

        Returns the per-sample IoU ``float64 [B]`` (for best/worst-case reports).
        """
        intersection, union = intersection_union(pred, target)
        return self.update_counts(intersection, union, categories)

    def update_original_resolution(
        self,
        probability: torch.Tensor,
        masks: Sequence[np.ndarray | torch.Tensor],
        categories: Sequence[str | None] | None = None,
        threshold: float = 0.5,
    ) -> torch.Tensor:
        """Foreground probability ``[B, S, S]`` and each sample's original mask ``[H_b, W_b]``:
        the probability is upsampled to ``H_b x W_b`` and thresholded before I and U."""
        intersection, union = original_resolution_counts(probability, masks, threshold)
        return self.update_counts(intersection, union, categories)

    def update_counts(
        self, intersection: torch.Tensor, union: torch.Tensor, categories: Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Add samples given by their ``I``, ``U`` ``[B]``; returns their IoU ``float64 [B]``."""
        intersection = intersection.detach().reshape(-1).cpu()
        union = union.detach().reshape(-1).cpu()
        if intersection.shape != union.shape:
            raise ValueError("intersection and union must have the same number of samples")
        if bool((intersection > union).any()):
            raise ValueError("an intersection exceeds its union: check the inputs")
        iou = iou_from_counts(intersection, union)
        s = self.state
        s["count"] += iou.numel()
        s["iou_sum"] += iou.sum()
        s["intersection"] += intersection.double().sum()
        s["union"] += union.double().sum()
        s["hits"] += (iou[:, None] >= torch.tensor(self.thresholds, dtype=torch.float64)).sum(0)
        if categories is not None:
            if len(categories) != iou.numel():
                raise ValueError(f"{len(categories)} categories for {iou.numel()} samples")
            for name, value in zip(categories, iou):
                if name is None:
                    continue
                index = self._category_index.get(name)
                if index is None:
                    raise ValueError(f"category {name!r} is not tracked; known: {self.categories}")
                s["category_count"][index] += 1
                s["category_iou_sum"][index] += value
        return iou

    # --- merging across processes ------------------------------------------------------------
    def merge(self, other: SegmentationMetrics) -> None:
        """Add another accumulator's state (same categories and thresholds)."""
        if other.categories != self.categories or other.thresholds != self.thresholds:
            raise ValueError("cannot merge metrics with different categories or thresholds")
        for key, value in other.state.items():
            self.state[key] += value

    def all_reduce(self, device: torch.device | str | None = None, group: Any = None) -> None:
        """Sum the state over all processes of ``torch.distributed`` (no-op when not initialised).

        ``device``: where the reduction runs (``cuda`` for NCCL; CPU for gloo).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for key, value in self.state.items():
            buffer = value.to(device) if device is not None else value.clone()
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
            self.state[key] = buffer.cpu()

    # --- results -----------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """``{"count", "mIoU", "oIoU", "Pr@0.5" ... "Pr@0.9", "category_mIoU", "category_count"}``."""
        s = self.state
        count = float(s["count"])
        union = float(s["union"])
        result: dict[str, Any] = {
            "count": int(count),
            "mIoU": float(s["iou_sum"]) / count if count else 0.0,
            "oIoU": float(s["intersection"]) / union if union else 0.0,
        }
        for k, hits in zip(self.thresholds, s["hits"].tolist()):
            result[f"Pr@{k:g}"] = hits / count if count else 0.0
        result["category_mIoU"] = {
            name: float(total / n)
            for name, n, total in zip(self.categories, s["category_count"].tolist(), s["category_iou_sum"].tolist())
            if n > 0
        }
        result["category_count"] = {
            name: int(n) for name, n in zip(self.categories, s["category_count"].tolist()) if n > 0
        }
        return result
