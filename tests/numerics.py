"""Numeric comparisons whose tolerances come from measured drift between CPU kernel paths.

float32 results are not bit-identical across CPUs: PyTorch picks its kernels by the instruction
sets it finds (``ATEN_CPU_CAPABILITY``: default / avx2 / avx512), oneDNN picks its own
(``ONEDNN_MAX_CPU_ISA``: SSE41 / AVX2 / AVX512_CORE / AMX), and each sums in another order. A
reference captured on one CPU therefore drifts on the next by up to a few 1e-4 in the tiny
model's probabilities. Every comparison that can see such drift (a stored reference, the fast
path against eager, a batch against single runs, tiles against one window) goes through
:func:`assert_within_drift` inside a test marked ``numerics``, with a tolerance set from the drift
measured over those kernel paths and stated beside it, far below the
difference a wrong computation makes.

``python -m benchmarks.numerics_drift`` reruns the ``numerics`` tests under each kernel path with
:data:`DRIFT_LOG` set: each call then records its largest difference instead of asserting, and the
benchmark tabulates drift against tolerance. ``.ci/run`` reruns the same tests, asserting, under
``ATEN_CPU_CAPABILITY=default`` and ``ONEDNN_MAX_CPU_ISA=AVX2``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

DRIFT_LOG = "SBANET_DRIFT_LOG"  # a JSON-lines file: measure (record, never fail) instead of asserting


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def assert_within_drift(actual: Any, expected: Any, *, atol: float, rtol: float = 0.0, check: str) -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise (numpy or torch, any shape).

    ``check`` names the comparison in failures and in the drift log. With :data:`DRIFT_LOG` set
    the largest difference is appended there and nothing is asserted: that mode is for the drift
    benchmark alone, which reports every check over its tolerance."""
    a, e = _array(actual), _array(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{check}: shape {a.shape} != expected {e.shape}")
    difference = np.abs(a - e)
    allowed = atol + rtol * np.abs(e)
    log = os.environ.get(DRIFT_LOG)
    if log:
        row = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0],
            "check": check,
            "max_abs": float(difference.max(initial=0.0)),
            "worst_ratio": float((difference / allowed).max(initial=0.0)),
            "atol": atol,
            "rtol": rtol,
        }
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        return
    np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=check)
