"""Training and evaluation loop helpers (the trainer builds on these)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


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
