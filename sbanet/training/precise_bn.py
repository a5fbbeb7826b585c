"""Precise BatchNorm ("precise BN", Wu & Johnson, 2021): recompute every BatchNorm's running
statistics with the final weights, as an exact average over a number of training batches.

Used before validation and at the end of a run (``train.recalibrate_bn``), by
``train.evaluate --recalibrate-bn`` and by the app's fine-tune job. Re-exported by
:mod:`sbanet.training.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sbanet.inference.precision import autocast

from . import distributed
from .evaluation import forward_batch, to_device


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]) -> int:
    """ "Precise BN" (Wu & Johnson, 2021): recompute every BatchNorm's running statistics with
    the final weights, as an exact average over ``batches``.

    Running averages with momentum lag behind weights that are still moving; after a short run
    (a few hundred steps, a fine-tune) eval-mode outputs can be far from train-mode ones. Returns
    the number of batches seen. The model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    count = 0
    try:
        for batch in batches:
            forward(model, batch)
            count += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    model.eval()
    return count


def recalibrate_on(
    model: nn.Module, dataset: Dataset, batches: int, batch_size: int, seed: int = 0, precision: str = "fp32"
) -> int:
    """:func:`recalibrate_batchnorm` on ``batches`` random batches of ``dataset`` per rank, drawn
    with ``seed`` (their statistics then averaged over ranks). The global RNG is left untouched,
    so recalibrating during training never changes the run. Returns the batches seen per rank."""
    info = distributed.current()
    device = next(model.parameters()).device
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    shard = order[: batches * batch_size * info.world_size][info.rank :: info.world_size].tolist()
    loader = DataLoader(torch.utils.data.Subset(dataset, shard), batch_size=batch_size)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), autocast(device, precision):
        seen = recalibrate_batchnorm(model, loader, lambda m, b: forward_batch(m, to_device(b, device)))
    distributed.average_batchnorm_buffers(model)
    return seen
