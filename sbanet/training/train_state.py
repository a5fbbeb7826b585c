"""Training checkpoints (``last.pt`` / ``best.pt``): everything a run needs to continue exactly.

The file is a pickle ``{"config": SBANetConfig.to_dict(), "model": state_dict, ...}``, the format
:func:`sbanet.checkpoint.load_pretrained` reads with ``allow_pickle=True``, plus the optimiser,
scheduler and gradient-scaler states, the position (``epoch``, ``step``, ``epoch_step``), the
random number generator states of every rank (python, numpy, torch, cuda), the resolved training
configuration and the metric history.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_KEYS = ("config", "model", "optimizer", "scheduler", "epoch", "step", "rng", "train_config")


def capture_rng() -> dict[str, Any]:
    """The state of every random number generator this process draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_training_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temporary file + rename): a run killed while saving keeps the old file."""
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"a training checkpoint needs {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a trainer checkpoint. It is a pickle: only load files you or your runs wrote."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training checkpoint at {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or any(k not in blob for k in CHECKPOINT_KEYS):
        raise ValueError(f"{path} is not an sbanet training checkpoint (needs {list(CHECKPOINT_KEYS)})")
    return blob


def saved_global_batch(state: dict[str, Any]) -> int:
    """A checkpoint's global batch: ``batch_size x processes x accumulate`` of the run that wrote it."""
    train_config = state.get("train_config") or {}
    batch, accumulate = int(train_config.get("batch_size", 1)), int(train_config.get("accumulate", 1))
    return batch * accumulate * int(state.get("world_size", 1))


@dataclass(frozen=True)
class ResumePosition:
    """Where a resumed run continues, in this run's optimiser steps. ``max_steps`` is the schedule
    length to use (rescaled with the batch when it was the checkpoint's); ``note`` says what was
    rescaled (None when the global batch is unchanged)."""

    step: int
    epoch: int
    epoch_step: int
    max_steps: int | None
    note: str | None = None


def resume_position(
    state: dict[str, Any], global_batch: int, steps_per_epoch: int, max_steps: int | None, allow_batch_change: bool
) -> ResumePosition:
    """The position of a checkpoint in a run whose global batch is ``global_batch``.

    Same global batch: the checkpoint's step, epoch and step inside the epoch. A different one
    (other processes, ``batch_size`` or ``accumulate``) changes what a step means, so it is refused
    unless ``allow_batch_change``; then the schedule is rescaled to the samples already seen: step
    ``s`` of batch ``G`` becomes ``floor(s x G / G')``, the step inside the epoch likewise (the
    epoch itself is kept), and a ``max_steps`` equal to the checkpoint's becomes
    ``ceil(max_steps x G / G')``, so the run ends after the same number of samples. The learning
    rate is not rescaled. The in-epoch position is approximate (the shards change with the
    number of processes); exact resumption needs the same global batch.
    """
    saved = saved_global_batch(state)
    step, epoch, epoch_step = int(state["step"]), int(state["epoch"]), int(state.get("epoch_step", 0))
    if saved == global_batch:
        return ResumePosition(step, epoch, epoch_step, max_steps)
    train_config = state.get("train_config") or {}
    was = (
        f"batch_size {train_config.get('batch_size')} x {state.get('world_size', 1)} process(es) x "
        f"accumulate {train_config.get('accumulate', 1)}"
    )
    if not allow_batch_change:
        raise ValueError(
            f"the checkpoint was trained with a global batch of {saved} ({was}), this run's is {global_batch}: "
            "a step would no longer mean the same samples and the schedule would silently change. Resume with "
            "the same batch_size x processes x accumulate, or pass --allow-batch-change (allow_batch_change=True) "
            "to rescale the schedule to the new batch"
        )
    new_step = step * saved // global_batch
    new_epoch_step = min(epoch_step * saved // global_batch, steps_per_epoch)
    new_max = max_steps
    if max_steps is not None and max_steps == train_config.get("max_steps"):
        new_max = math.ceil(max_steps * saved / global_batch)
    note = (
        f"global batch changed {saved} ({was}) -> {global_batch}: optimiser step {step} -> {new_step}, "
        f"step in epoch {epoch + 1}: {epoch_step} -> {new_epoch_step}"
        + (f", max_steps {max_steps} -> {new_max}" if new_max != max_steps else "")
        + "; the schedule keeps the fraction of samples seen, the learning rate is unchanged"
    )
    return ResumePosition(new_step, epoch, new_epoch_step, new_max, note)
