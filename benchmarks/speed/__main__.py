"""One benchmark case in this (fresh) process: ``python -m benchmarks.speed --case JSON``.

The parent (:func:`benchmarks.speed.suite.run_in_subprocess`) reads the result from the last
stdout line, which starts with :data:`~benchmarks.speed.suite.RESULT_MARKER`.
"""

from __future__ import annotations

import argparse
import json

from .measure import Case
from .run import run_case
from .suite import RESULT_MARKER


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure one benchmark case in this process.")
    parser.add_argument("--case", required=True, help="the case as JSON (see benchmarks.speed.measure.Case)")
    args = parser.parse_args(argv)
    result = run_case(Case.from_dict(json.loads(args.case)))
    print(RESULT_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
