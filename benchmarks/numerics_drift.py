"""How far float results drift between CPU kernel paths, against the tests' tolerances.

    python -m benchmarks.numerics_drift --json benchmarks/results/numerics_drift.json

Runs the ``numerics``-marked tests (``tests/numerics.py``) once per kernel path, each in its own
process (PyTorch and oneDNN read these variables when they load): the CPU's own path, then
PyTorch's ``ATEN_CPU_CAPABILITY`` forced down to ``avx2`` and to ``default`` (no vector
extensions), and oneDNN's ``ONEDNN_MAX_CPU_ISA`` capped at ``AVX512_CORE`` (no AMX / bf16),
``AVX2`` and ``SSE41``, and both lowest at once. With ``SBANET_DRIFT_LOG`` set every
``assert_within_drift`` records its largest difference instead of asserting; the other
assertions of those tests (mask IoU floors of the shipped model, shapes) still run, and their
pass/fail count is reported per path.

The table gives per check the largest difference seen on any path, the path that gave it, the
tolerance, and the margin (tolerance / drift). A tolerance is set from this table with room for
CPUs not seen here; a margin under 1 is a test that fails on that path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS: dict[str, dict[str, str]] = {
    "native": {},
    "aten=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten=default": {"ATEN_CPU_CAPABILITY": "default"},
    "onednn=AVX512_CORE": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "onednn=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn=SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "aten=default+onednn=SSE41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors|skipped)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_path(name: str, extra: dict[str, str], marker: str) -> tuple[list[dict], dict[str, int]]:
    """One pytest process under ``extra`` -> (the drift rows it logged, its outcome counts)."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "drift.jsonl"
        env = {**os.environ, **extra, "SBANET_DRIFT_LOG": str(log), "OMP_WAIT_POLICY": "PASSIVE"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, "tests"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
        counts = {kind.rstrip("s"): int(n) for n, kind in SUMMARY.findall(tail)}
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for row in rows:
        row["path"] = name
    print(f"{name:28s} {len(rows):4d} checks  {tail}", flush=True)
    return rows, counts


def worst_per_check(rows: list[dict]) -> list[dict]:
    """Per (test, check): the largest difference over every path and every call."""
    worst: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["test"], row["check"])
        if key not in worst or row["worst_ratio"] > worst[key]["worst_ratio"]:
            worst[key] = row
    return [worst[key] for key in sorted(worst)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--marker", default="numerics", help="pytest marker expression (default: numerics)")
    parser.add_argument("--json", type=Path, help="write the rows and the table here")
    args = parser.parse_args(argv)

    rows, outcomes = [], {}
    for name in args.paths:
        path_rows, outcomes[name] = run_path(name, PATHS[name], args.marker)
        rows += path_rows
    table = worst_per_check(rows)
    print("\n| test | check | largest drift | on | atol / rtol | margin |\n| --- | --- | ---: | --- | --- | ---: |")
    for row in table:
        margin = 1.0 / row["worst_ratio"] if row["worst_ratio"] > 0 else float("inf")
        test = row["test"].split("::", 1)[1]
        print(
            f"| {test} | {row['check']} | {row['max_abs']:.2e} | {row['path']} | "
            f"{row['atol']:.0e} / {row['rtol']:.0e} | {margin:.1f} |"
        )
    failing = [row for row in table if row["worst_ratio"] > 1.0]
    failed_paths = {name: counts for name, counts in outcomes.items() if counts.get("failed") or counts.get("error")}
    print(f"\n{len(table)} checks on {len(args.paths)} kernel paths, CPU: {cpu_name()}")
    print(f"over tolerance: {len(failing)}; paths with failing assertions: {failed_paths or 'none'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"cpu": cpu_name(), "paths": {n: PATHS[n] for n in args.paths}, "outcomes": outcomes}
        args.json.write_text(json.dumps({**report, "worst": table, "rows": rows}, indent=1) + "\n")
    return 1 if failing or failed_paths else 0


if __name__ == "__main__":
    raise SystemExit(main())
