"""sbanet: Scale-wise Bidirectional Alignment Network for referring remote sensing segmentation."""

from .build import ABLATIONS, PRESETS, build_model, build_preset, sbanet_lite, sbanet_swin_b, sbanet_tiny
from .config import SBANetConfig

__version__ = "0.1.0"

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "SBANetConfig",
    "build_model",
    "build_preset",
    "sbanet_lite",
    "sbanet_swin_b",
    "sbanet_tiny",
]
