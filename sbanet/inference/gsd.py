"""Ground sampling distance (GSD): the scale a model learned, and resampling an image to it.

A checkpoint records, in its metadata's ``"gsd"`` block, the metres per pixel of each training
source (with where the number comes from and how sure it is) and ``input_m_per_px``: the metres
one *model-input* pixel covered in training (the source's GSD times the training crops' side over
the input size). Given an image's own GSD, :func:`plan_scale` says how to resample it so that one
model-input pixel covers that many metres again. Checkpoints without the block load as before and
are never resampled (:meth:`TrainingGSD.from_metadata` returns None).

Numbers only here (no torch, no rasterio): :mod:`sbanet.inference.predictor` resamples whole
images, :mod:`sbanet.geo.tiling` sizes scene tiles, :mod:`sbanet.geo.resolution` reads a
GeoTIFF's GSD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# a GSD outside this range (metres per pixel) is a typo or the wrong unit, not imagery
MIN_GSD_M = 0.01
MAX_GSD_M = 1000.0
# An image of unknown GSD no longer than this (pixels) runs whole, resized to the input size, as
# the app runs every upload; a larger one is a scene, tiled at its own pixel size. The default
# model learned whole Dubai tiles of up to 1126 px resized to 320 (3.5x); the tiles of a 0.5 Mpx
# photo at its own pixels are a scale it never saw, and each tile reads "the road on the left" as
# its own left (docs/benchmarks.md, "One image, one forward").
WHOLE_MAX = 1280


@dataclass(frozen=True)
class SourceGSD:
    """One training source's metres per pixel, its plausible range and where it comes from."""

    m_per_px: float
    low: float
    high: float
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {"m_per_px": self.m_per_px, "range": [self.low, self.high], "how": self.how}


@dataclass(frozen=True)
class TrainingGSD:
    """What a checkpoint says of its training scale.

    ``input_m_per_px``: metres per model-input pixel in training, the target of resampling;
    ``sources``: per training source, its :class:`SourceGSD`; ``how``: how the input figure was
    derived from them.
    """

    input_m_per_px: float
    how: str
    sources: dict[str, SourceGSD] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The ``metadata["gsd"]`` block of a checkpoint's config.json."""
        return {
            "input_m_per_px": self.input_m_per_px,
            "how": self.how,
            "sources": {name: source.to_dict() for name, source in self.sources.items()},
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> TrainingGSD | None:
        """The checkpoint's training GSD, or None when its metadata has none (older checkpoints)."""
        block = metadata.get("gsd") if isinstance(metadata, dict) else None
        if not isinstance(block, dict) or "input_m_per_px" not in block:
            return None
        sources = {
            name: SourceGSD(float(s["m_per_px"]), float(s["range"][0]), float(s["range"][1]), str(s.get("how", "")))
            for name, s in block.get("sources", {}).items()
        }
        return cls(check_gsd(block["input_m_per_px"], "input_m_per_px"), str(block.get("how", "")), sources)


def check_gsd(value: Any, name: str = "gsd") -> float:
    """``value`` as metres per pixel; ``ValueError`` unless a finite number in
    [:data:`MIN_GSD_M`, :data:`MAX_GSD_M`]."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of metres per pixel, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of metres per pixel, e.g. 0.5, got {value!r}") from None
    if not math.isfinite(number) or not MIN_GSD_M <= number <= MAX_GSD_M:
        raise ValueError(f"{name} must be between {MIN_GSD_M:g} and {MAX_GSD_M:g} metres per pixel, got {value!r}")
    return number


def as_pair(gsd: Any) -> tuple[float, float]:
    """A GSD given as one number or ``(row, column)`` metres per pixel -> checked ``(gy, gx)``."""
    if isinstance(gsd, (tuple, list)):
        if len(gsd) != 2:
            raise ValueError(f"gsd must be one number or (rows, columns) metres per pixel, got {gsd!r}")
        return check_gsd(gsd[0]), check_gsd(gsd[1])
    value = check_gsd(gsd)
    return value, value


@dataclass(frozen=True)
class ScalePlan:
    """How an image of ``size`` (H, W) at ``gsd`` (gy, gx metres per pixel) is resampled so one
    model-input pixel covers ``target`` metres: ``factor`` (fy, fx) multiplies its pixel counts."""

    size: tuple[int, int]
    gsd: tuple[float, float]
    target: float
    factor: tuple[float, float]

    @property
    def resampled(self) -> tuple[int, int]:
        """(H', W'): the image's size at the training scale (at least 1 pixel)."""
        return tuple(max(1, round(n * f)) for n, f in zip(self.size, self.factor))  # type: ignore[return-value]

    def tile(self, input_size: int) -> tuple[int, int]:
        """(rows, columns) of source pixels one ``input_size`` model tile covers at this scale."""
        return tuple(max(1, round(input_size / f)) for f in self.factor)  # type: ignore[return-value]

    def describe(self) -> str:
        """For people: ``"image 0.50 m/px, model 1.70 m/px: resampled x0.29 (900x900 -> 265x265)"``."""
        gy, gx = self.gsd
        shown = f"{gy:.2f}" if math.isclose(gy, gx, rel_tol=1e-3) else f"{gy:.2f} x {gx:.2f}"
        (h, w), (rh, rw) = self.size, self.resampled
        factor = math.sqrt(self.factor[0] * self.factor[1])  # the area's scale when rows and columns differ
        return f"image {shown} m/px, model {self.target:.2f} m/px: resampled x{factor:.2f} ({h}x{w} -> {rh}x{rw})"


def plan_scale(size: tuple[int, int], gsd: Any, training: TrainingGSD) -> ScalePlan:
    """The :class:`ScalePlan` of an image of ``size`` (H, W) at ``gsd`` (one number or (gy, gx))."""
    gy, gx = as_pair(gsd)
    target = training.input_m_per_px
    return ScalePlan((int(size[0]), int(size[1])), (gy, gx), target, (gy / target, gx / target))


def no_scale_note(
    training: TrainingGSD | None, gsd: Any, off: bool = False, then: str = "resized to the input size"
) -> str:
    """Why an image is not resampled to the training GSD, and ``then`` what is done instead, for
    people (``gsd`` None: none known)."""
    if off:
        return f"scale: resampling to the training GSD is off: {then}"
    if training is None:
        return f"scale: this model records no training GSD: {then}"
    if gsd is None:
        return f"scale: the image states no GSD (give one in metres per pixel): {then}"
    return f"scale: {then}"
