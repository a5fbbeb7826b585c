"""The speed / memory / agreement benchmark behind ``python -m benchmarks.bench`` (see :mod:`.suite`)."""

from .measure import Case
from .report import evaluate_targets, markdown_report
from .run import run_case
from .suite import PARTS, Settings, build_cases, run_suite

__all__ = ["PARTS", "Case", "Settings", "build_cases", "evaluate_targets", "markdown_report", "run_case", "run_suite"]
