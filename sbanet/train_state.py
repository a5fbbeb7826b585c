"""Training checkpoints (``last.pt`` / ``best.pt``): everything a run needs to continue exactly.

The file is a pickle ``{"config": SBANetConfig.to_dict(), "model": state_dict, ...}``, the format
:func:`sbanet.checkpoint.load_pretrained` reads with ``allow_pickle=True``, plus the optimiser,
scheduler and gradient-scaler states, the position (``epoch``, ``step``, ``epoch_step``), the
random number generator states of every rank (python, numpy, torch, cuda), the resolved training
configuration and the metric history.
"""

from __future__ import annotations

import os
import random
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
