"""Can a prediction be trusted? "found", "low confidence" or "nothing found", from two numbers.

A referring-segmentation model always returns a probability map, also for "a purple elephant"
on a forest. Two cheap statistics of the map separate "there is something" from "there is
nothing" well enough to warn a user:

* ``area_fraction``: the share of the image's pixels in the mask (``probability >= threshold``);
* ``mean_probability``: the mean probability inside that mask (how sure the model is where it
  says yes).

:class:`ConfidenceThresholds` holds the cut-offs. A checkpoint may carry calibrated ones in its
``config.json`` metadata under ``"confidence"`` (:meth:`ConfidenceThresholds.from_metadata`): the
shipped default model carries those ``python -m recipes.default_model.model_report --calibrate`` fitted on
dubai-aerial tile 6, which it was not trained on (classes present in an image vs classes absent
from it and things no Dubai image holds). Without them the defaults below apply: cut-offs
measured the same way on an earlier default model that had never been trained to answer
"nothing".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FOUND = "found"
LOW_CONFIDENCE = "low confidence"
NOTHING_FOUND = "nothing found"
VERDICTS = (FOUND, LOW_CONFIDENCE, NOTHING_FOUND)
METADATA_KEY = "confidence"


@dataclass(frozen=True)
class ConfidenceThresholds:
    """Cut-offs of :func:`judge` (fractions in [0, 1]).

    min_area_fraction: a mask smaller than this share of the image is "nothing found".
    min_mean_probability: a mask whose mean probability inside is below this is "nothing found"
        (the model barely crossed the mask threshold anywhere).
    confident_mean_probability: below this (and above the minimum) the mask is "low confidence".
    """

    min_area_fraction: float = 0.01
    min_mean_probability: float = 0.65
    confident_mean_probability: float = 0.78

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"confidence threshold {name} must be within [0, 1], got {value!r}")
        if self.min_mean_probability > self.confident_mean_probability:
            raise ValueError(
                "min_mean_probability must not exceed confident_mean_probability, got "
                f"{self.min_mean_probability} > {self.confident_mean_probability}"
            )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> ConfidenceThresholds:
        """The thresholds a checkpoint's metadata carries under ``"confidence"`` (unknown keys
        are refused), else the defaults."""
        block = (metadata or {}).get(METADATA_KEY)
        if not block:
            return cls()
        if not isinstance(block, Mapping):
            raise ValueError(f"checkpoint metadata {METADATA_KEY!r} must be a mapping, got {type(block).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"unknown confidence thresholds {unknown}; known: {sorted(known)}")
        return cls(**{key: float(value) for key, value in block.items()})


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` says about one mask, with the numbers it used and a sentence for people."""

    label: str  # one of VERDICTS
    area_fraction: float
    mean_probability: float | None  # None for an empty mask
    reason: str

    @property
    def trusted(self) -> bool:
        return self.label == FOUND


def mask_statistics(mask: np.ndarray, probability: np.ndarray) -> tuple[float, float | None]:
    """``bool [H, W]`` mask and ``float [H, W]`` probability -> (area fraction, mean probability
    inside the mask or None when the mask is empty)."""
    mask = np.asarray(mask, dtype=bool)
    probability = np.asarray(probability, dtype=np.float32)
    if mask.shape != probability.shape or mask.ndim != 2:
        raise ValueError(f"mask {mask.shape} and probability {probability.shape} must be the same 2-D shape")
    if mask.size == 0:
        raise ValueError("cannot judge an empty image")
    area = float(mask.mean())
    inside = float(probability[mask].mean()) if mask.any() else None
    return area, inside


def judge(prediction: Any, thresholds: ConfidenceThresholds | None = None) -> Verdict:
    """A :class:`~sbanet.inference.predictor.Prediction` (``mask``, ``probability``) -> :class:`Verdict`."""
    limits = thresholds or ConfidenceThresholds()
    area, inside = mask_statistics(prediction.mask, prediction.probability)
    if area < limits.min_area_fraction or inside is None:
        return Verdict(
            NOTHING_FOUND, area, inside, f"the mask covers {100 * area:.2f} % of the image (too little to trust)"
        )
    if inside < limits.min_mean_probability:
        return Verdict(
            NOTHING_FOUND, area, inside, f"mean probability inside the mask is only {inside:.2f}: the model is guessing"
        )
    if inside < limits.confident_mean_probability:
        return Verdict(
            LOW_CONFIDENCE, area, inside, f"mean probability inside the mask is {inside:.2f}: check it before using it"
        )
    return Verdict(FOUND, area, inside, f"mean probability inside the mask is {inside:.2f}")
