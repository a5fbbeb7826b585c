"""One benchmark case measured in this process: :func:`run_case` picks the measurement by the
case's kind (:mod:`.measure` for inference, agreement, training and profiles; :mod:`.components`
for reduced precision per component)."""

from __future__ import annotations

from typing import Any

import torch

from .components import measure_components
from .measure import (
    Case,
    measure_agreement,
    measure_inference,
    measure_profile,
    measure_training,
    peak_rss_mb,
)

MEASURES = {
    "inference": measure_inference,
    "agreement": measure_agreement,
    "train": measure_training,
    "profile": measure_profile,
    "components": measure_components,
}


def run_case(case: Case) -> dict[str, Any]:
    """Measure ``case`` in this process; adds the process's peak RSS (``ru_maxrss``)."""
    result = MEASURES[case.kind](case)
    result["peak_rss_mb"] = peak_rss_mb()
    result["threads"] = torch.get_num_threads()
    return result
