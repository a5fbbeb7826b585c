"""Datasets (RRSIS-D, RefSegRS, synthetic scenes, land-cover conversions) and transforms."""

from .sample import ReferringSample

__all__ = ["ReferringSample"]
