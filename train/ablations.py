"""Run the rows of one of the paper's tables: ``python -m train.ablations --table I|II|III|IV|V|VI``.

Each row of the table is a key of :data:`sbanet.build.ABLATION_TABLES` (see docs/training.md for
the row -> ``model.ablation`` map). The command prints every row's architecture switches and
parameter counts, then trains the rows one after another through ``train.fit``, each into
``<output.dir>/<row>``::

    python -m train.ablations --table III --config configs/rrsisd_swin_b.yaml data.root=/data/rrsisd
    python -m train.ablations --table IV --config configs/rrsisd_swin_b.yaml --dry-run   # print only
    python -m train.ablations --table V --rows tcsa_no_text --config configs/rrsisd_swin_b.yaml ...

Overrides (``section.key=value``) apply to every row, as in ``train.fit``. Under ``torchrun``
each row trains on all processes in turn; a row that already has a ``best.pt`` is skipped, so a
stopped table picks up where it was (pass ``--retrain`` to train it again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sbanet.build import ABLATION_TABLES, ABLATIONS, PRESET_CONFIGS, build_model
from sbanet.summary import component_parameters
from train.fit import run
from train.fit_config import FitConfig, load_config, split_cli_overrides

SHOWN_PARTS = ("query_tokens", "query_text_alignment", "dfs", "pwam", "tcsa", "total")


def row_configs(table: str, config_path: Path, overrides: list[str], rows: list[str] | None) -> dict[str, FitConfig]:
    """``{row: the FitConfig that trains it}`` for the rows of ``table`` (all, or ``rows``)."""
    if table not in ABLATION_TABLES:
        raise ValueError(f"--table must be one of {sorted(ABLATION_TABLES)}, got {table!r}")
    keys = list(ABLATION_TABLES[table])
    if rows:
        unknown = [r for r in rows if r not in keys]
        if unknown:
            raise ValueError(f"rows {unknown} are not in Table {table}: {keys}")
        keys = [k for k in keys if k in rows]
    base = load_config(config_path, overrides)
    out = Path(base.output.dir)
    return {
        row: load_config(config_path, [*overrides, f"model.ablation={row}", f"output.dir={out / row}"]) for row in keys
    }


def describe(row: str, config: FitConfig) -> dict[str, Any]:
    """The row's switches (its ablation on top of the preset) and its parameters per component."""
    m = config.model
    model_config = PRESET_CONFIGS[m.preset](**{**ABLATIONS[row], **m.overrides})
    parts = component_parameters(build_model(model_config, pretrained=False))
    return {"row": row, "switches": dict(ABLATIONS[row]), "parameters": {k: parts[k] for k in SHOWN_PARTS}}


def format_row(info: dict[str, Any]) -> str:
    switches = ", ".join(f"{k}={v}" for k, v in info["switches"].items())
    counts = "  ".join(f"{k} {v:,}" for k, v in info["parameters"].items())
    return f"{info['row']:<24} {switches}\n{'':<24} {counts}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.ablations", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", required=True, choices=sorted(ABLATION_TABLES), help="the paper's table")
    parser.add_argument("--config", type=Path, required=True, help="the train.fit YAML every row starts from")
    parser.add_argument("--rows", help="comma-separated subset of the table's rows")
    parser.add_argument("--dry-run", action="store_true", help="print the rows and their sizes, train nothing")
    parser.add_argument("--retrain", action="store_true", help="train rows that already have a best.pt too")
    args, rest = parser.parse_known_args(argv)
    try:
        configs = row_configs(args.table, args.config, split_cli_overrides(rest), args.rows and args.rows.split(","))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    preset = next(iter(configs.values())).model.preset
    print(f"Table {args.table} on {preset}: {len(configs)} rows", flush=True)
    for row, config in configs.items():
        print(format_row(describe(row, config)) + f"\n{'':<24} -> {config.output.dir}", flush=True)
    if args.dry_run:
        return 0

    for row, config in configs.items():
        if (Path(config.output.dir) / "best.pt").is_file() and not args.retrain:
            print(f"{row}: {config.output.dir}/best.pt exists, skipped (--retrain to train it again)", flush=True)
            continue
        print(f"\n=== Table {args.table}, row {row} ===", flush=True)
        result = run(config)
        if result.cancelled:
            print(f"{row} cancelled; run the same command again to continue with the next rows", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
