"""sbanet: Scale-wise Bidirectional Alignment Network for referring remote sensing segmentation.

The public API::

    from sbanet import Predictor, default_model_source
    predictor = Predictor.from_pretrained(default_model_source())  # numpy in, numpy out
    prediction = predictor.predict(image, "the water")  # a Prediction: mask, probability, attention

    from sbanet import build_preset, load_pretrained, save_pretrained  # models and checkpoints

The names below load on first use (PEP 562), so ``import sbanet`` and light commands such as
``python -m sbanet.predict --help`` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "ABLATIONS": "build",
    "PRESETS": "build",
    "build_model": "build",
    "build_preset": "build",
    "sbanet_lite": "build",
    "sbanet_swin_b": "build",
    "sbanet_tiny": "build",
    "SBANetConfig": "config",
    "load_pretrained": "checkpoint",
    "save_pretrained": "checkpoint",
    "Prediction": "inference.predictor",
    "Predictor": "inference.predictor",
    "Precision": "inference.precision",
    "default_model_source": "inference.shipped",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sbanet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
