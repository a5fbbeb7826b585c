"""Datasets (RRSIS-D, RefSegRS, synthetic scenes, land-cover conversions) and transforms."""

from .datasets import DATASETS, load_samples
from .sample import ReferringSample
from .transforms import ReferringDataset, normalize, resize_image, resize_mask

__all__ = [
    "DATASETS",
    "ReferringDataset",
    "ReferringSample",
    "load_samples",
    "normalize",
    "resize_image",
    "resize_mask",
]
