"""Evaluation by the reference protocol (LAVT / RMSIN ``test.py``): every sample of the split,
argmax prediction on the model's input grid (or, optionally, at the original resolution), and
the metrics of :mod:`sbanet.training.metrics`. Sharded over ranks in a distributed run, the per-sample
states merged, so every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sbanet.inference.precision import autocast

from . import distributed
from .metrics import SegmentationMetrics, intersection_union, original_resolution_counts


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def forward_batch(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """``{"image" [B,3,S,S], "input_ids" [B,L], "attention_mask" [B,L]}`` -> logits ``[B,2,S,S]``."""
    return model(batch["image"], batch["input_ids"], batch["attention_mask"])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 12,
    precision: str = "fp32",
    num_workers: int = 0,
    original_resolution: bool = False,
    progress: Callable[[int, int], None] | None = None,
    group_of: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on every item of ``dataset`` (a :class:`sbanet.data.ReferringDataset`).

    Returns :meth:`SegmentationMetrics.compute`'s dict (``count``, ``mIoU``, ``oIoU``,
    ``Pr@0.5`` ... ``Pr@0.9``, ``category_mIoU``, ``category_count``) plus ``per_sample``:
    ``[(index, IoU)]`` sorted by index, for best/worst-case reports. ``original_resolution``
    scores each prediction against ``dataset.samples[index].load_mask()`` at the image's own size.
    ``progress(done, total)`` is called after each batch (on every rank, with local counts).
    ``group_of(sample) -> name`` adds ``groups``: ``{name: the same metrics over that group's
    samples}`` (e.g. class-level vs instance-level expressions).
    """
    info = distributed.current()
    device = next(model.parameters()).device
    samples = getattr(dataset, "samples", None)
    if original_resolution and samples is None:
        raise ValueError("original_resolution needs a dataset with .samples (a ReferringDataset)")
    categories = sorted({s.category for s in samples if s.category is not None}) if samples is not None else []
    metrics = SegmentationMetrics(categories)
    if group_of is not None and samples is None:
        raise ValueError("group_of needs a dataset with .samples (a ReferringDataset)")
    # every rank names the groups from the whole split, so their states all-reduce alike
    group_names = sorted({group_of(s) for s in samples}) if group_of is not None else []
    groups = {name: SegmentationMetrics(categories) for name in group_names}
    sampler = distributed.ShardSampler(len(dataset), info.rank, info.world_size)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    was_training = model.training
    model.eval()
    per_sample: list[tuple[int, float]] = []
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = forward_batch(model, batch)
        indices = [int(i) for i in batch["index"]]
        names = [samples[i].category for i in indices] if samples is not None else None
        if original_resolution:
            masks = [samples[i].load_mask() for i in indices]
            intersection, union = original_resolution_counts(model.probability(logits), masks)
        else:
            intersection, union = intersection_union(logits.argmax(1), batch["mask"])
        iou = metrics.update_counts(intersection, union, names)
        per_sample.extend(zip(indices, iou.tolist()))
        if group_of is not None:
            for k, i in enumerate(indices):
                groups[group_of(samples[i])].update_counts(intersection[k : k + 1], union[k : k + 1], [names[k]])
        if progress is not None:
            progress(len(per_sample), len(sampler))
    model.train(was_training)
    metrics.all_reduce(device)
    result = metrics.compute()
    if group_of is not None:
        for group in groups.values():
            group.all_reduce(device)
        result["groups"] = {name: group.compute() for name, group in groups.items()}
    result["per_sample"] = sorted(pair for part in distributed.gather_objects(per_sample) for pair in part)
    return result
