"""The human-in-the-loop loop as a user runs it: the shipped model, imagery it has not seen, N
accepted corrections, one fine-tune job, held-out IoU before and after, and what it forgot.

    python -m benchmarks.finetune_loop                       # the shipped model, 2 workers
    python -m benchmarks.finetune_loop --model PATH --ns 5 10 30 all --seeds 0 1

* **New domain**: the two SpaceNet scenes of ``../shared/data/spacenet-sample`` (panchromatic
  16-bit GeoTIFFs of a US suburb; "all buildings" against ``geotiff_labels.geojson``, "the roads"
  against ``sample_road_raster_mask.tif``), cut into quarter-width crops (225 px and 325 px), kept
  as 16-bit single-band images like a user's upload. Each scene is split in vertical strips: the
  left half is the correction pool (crops at half-crop strides), the next quarter the user's
  held-out masks (stored as ``val``: the job measures and early-stops on them, the app shows
  them), the right quarter the benchmark's own test crops, which no run sees. Crops whose class
  covers under 0.5 % are left out.
* **Selection**: ``uncertainty`` takes the N pool crops the base model is least sure of (the
  review queue's "most uncertain first": :func:`annotate.store.masks.mean_uncertainty`), ``random`` a
  seeded draw; both nested in N. With every crop (``all``) the two are the same run.
* **The loop**: a fresh store gets the N crops as accepted masks (``train``) and the held-out
  ones (``val``); :func:`annotate.jobs.finetune_job.run_finetune` runs with :class:`FinetuneConfig`'s
  defaults (``--set key=value`` overrides any field), i.e. the budget, replay of the base's own
  training data (its recipe's folders, from ``--replay-root``) and early stopping.
* **Scores** of the base and of every new model: the test crops' IoU per class (mean over crops,
  the reference protocol at the input size) and the class-level expressions of dubai-aerial
  tile 6 whole images (the shipped model's validation tile, ``runs/data/dubai-referring-whole``
  as converted by ``recipes.default_model.train``; ``--tile6``): forgetting is the drop of its mIoU.

Runs go to ``--workers`` processes of ``--threads`` torch threads each, longest first. Prints a
table per run and the means over seeds; writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from recipes.default_model.scale import DATA, spacenet_scenes

CATEGORIES = {"all buildings": "building", "the roads": "road"}
MIN_COVERAGE = 0.005  # crops where the class covers less are left out (an IoU of a few pixels is noise)
STRIPS = {"pool": (0.0, 0.5), "val": (0.5, 0.75), "test": (0.75, 1.0)}
TILE6 = Path("runs/data/dubai-referring-whole")


def _crop(array: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    return np.ascontiguousarray(array[y : y + size, x : x + size])


def spacenet_crops(data: Path) -> dict[str, list[Any]]:
    """``{"pool" | "val" | "test": [ReferringSample]}``: see the module docstring."""
    from sbanet.data import ReferringSample

    parts: dict[str, list[Any]] = {part: [] for part in STRIPS}
    for image, truth in spacenet_scenes(data / "spacenet-sample"):
        (expression, mask), image = next(iter(truth.items())), np.asarray(image)
        category, (height, width) = CATEGORIES[expression], mask.shape
        size = width // 4
        for part, (start, end) in STRIPS.items():
            x_range = range(round(start * width), round(end * width) - size + 1, size // 2)
            for y in range(0, height - size + 1, size // 2):
                for x in x_range:
                    if _crop(mask, y, x, size).mean() < MIN_COVERAGE:
                        continue
                    split = {"pool": "train"}.get(part, part)
                    sample_id = f"spacenet/{category}/y{y}-x{x}"
                    parts[part].append(
                        ReferringSample(
                            sample_id=sample_id,
                            image_id=sample_id,
                            expression=expression,
                            split=split,
                            load_image=partial(_crop, image, y, x, size),
                            load_mask=partial(_crop, mask, y, x, size),
                            category=category,
                        )
                    )
    return parts


def tile6_samples(root: Path) -> list[Any]:
    """The class-level ("the water", "all buildings") samples of the whole-image tile-6 split."""
    from recipes.default_model.model_report import sample_rules
    from sbanet.data import load_samples

    rules = sample_rules(root, "val")
    return [s for s in load_samples("folder", root, "val") if rules.get(s.ref_id) == "class"]


def score(source: str, test: list[Any], tile6: list[Any]) -> dict[str, Any]:
    """A checkpoint's test-crop IoU per class (and their mean) and its tile-6 class-level mIoU."""
    from sbanet.checkpoint import load_pretrained
    from sbanet.data import ReferringDataset
    from sbanet.training.evaluation import evaluate

    model, tokenizer = load_pretrained(source)
    c = model.config

    def metrics(samples: list[Any]) -> dict[str, Any]:
        dataset = ReferringDataset(samples, c.image_size, tokenizer, c.max_tokens, c.pixel_mean, c.pixel_std)
        return evaluate(model, dataset, batch_size=8)

    new = metrics(test)
    result = {**{k: float(v) for k, v in new["category_mIoU"].items()}, "new_domain_mIoU": float(new["mIoU"])}
    result["tile6_class_mIoU"] = float(metrics(tile6)["mIoU"]) if tile6 else None
    return result


def uncertainties(source: str, pool: list[Any]) -> list[float]:
    """The base model's mean pixel uncertainty on each pool crop (the review queue's order key)."""
    from annotate.store.masks import mean_uncertainty
    from sbanet.inference.predictor import Predictor

    predictor = Predictor.from_pretrained(source)
    return [mean_uncertainty(predictor.predict(s.load_image(), s.expression).probability) for s in pool]


def plan_tasks(args: argparse.Namespace, order: list[int], pool_size: int) -> list[dict[str, Any]]:
    """One task per (N, selection rule, seed); ``all`` is one rule-free run per seed."""
    tasks = []
    for n in args.ns:
        count = pool_size if n == "all" else int(n)
        if count > pool_size:
            raise ValueError(f"N = {count} but the correction pool has {pool_size} crops")
        for seed in args.seeds:
            rules = ["all"] if count == pool_size else args.rules
            for rule in rules:
                if rule == "random":
                    chosen = np.random.default_rng(seed).permutation(pool_size)[:count]
                else:
                    chosen = order[:count]
                tasks.append({"n": count, "rule": rule, "seed": seed, "chosen": sorted(int(i) for i in chosen)})
    return sorted(tasks, key=lambda t: -t["n"])  # longest first: the workers finish together


def run_one(task: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """One loop in a fresh store: import, fine-tune with the job, score the new model."""
    import torch

    from annotate import make_store
    from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, run_finetune
    from annotate.store import runs
    from annotate.store.transfer import import_samples

    torch.set_num_threads(args["threads"])
    crops = spacenet_crops(Path(args["data"]))
    tile6 = tile6_samples(Path(args["tile6"])) if args["tile6"] else []
    overrides = {"device": "cpu", "eval_splits": ("val",), "replay_root": args["replay_root"], **args["set"]}
    config = FinetuneConfig(**{**overrides, "seed": task["seed"]})
    with tempfile.TemporaryDirectory(prefix="finetune-loop-") as tmp:
        store = make_store(f"sqlite:///{tmp}/store.sqlite", Path(tmp) / "data")
        import_samples(store, [crops["pool"][i] for i in task["chosen"]] + crops["val"], author="benchmark")
        with store.Session.begin() as session:
            base = runs.add_model_version(session, name="base", checkpoint=args["model"], preset="base").id
        started = time.perf_counter()
        outcome = run_finetune(store, queue_finetune(store, base, config, author="benchmark"))
        seconds = time.perf_counter() - started
        with store.ReadSession() as session:
            plan = runs.get_run(session, outcome.run_id).config["plan"]
            new = runs.checkpoint_source(store.files, runs.get_model_version(session, outcome.model_version_id))
        after = score(new, crops["test"], tile6)
        store.close()
    return {
        **{k: task[k] for k in ("n", "rule", "seed")},
        "held_out_mIoU": [outcome.metrics_before["mIoU"], outcome.metrics_after["mIoU"]],
        "after": after,
        "plan": {k: v for k, v in plan.items() if k != "checks"},
        "checks": plan.get("checks"),
        "seconds": round(seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def _setting(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (a bare word stays a string), for ``--set``."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _n(text: str) -> str | int:
    return text if text == "all" else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base checkpoint folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--tile6", type=Path, default=TILE6, help="the whole-image dubai conversion (forgetting)")
    parser.add_argument("--replay-root", default=".", help="where the base recipe's data folders are found")
    parser.add_argument("--ns", nargs="+", type=_n, default=[5, 10, 30, "all"], help="corrections per run")
    parser.add_argument("--rules", nargs="+", default=["uncertainty", "random"], choices=["uncertainty", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--set", type=_setting, action="append", default=[], help="a FinetuneConfig field=value")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/finetune_loop.json"))
    return parser.parse_args(argv)


def summarize(rows: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Means over seeds per (N, rule): held-out and test IoU after, tile-6 forgetting."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["n"], row["rule"]), []).append(row)
    summary = []
    for (n, rule), group in sorted(groups.items()):
        entry = {"n": n, "rule": rule, "seeds": len(group)}
        for key in ("building", "road", "new_domain_mIoU", "tile6_class_mIoU"):
            values = [r["after"][key] for r in group if r["after"].get(key) is not None]
            entry[key] = float(np.mean(values)) if values else None
        if base.get("tile6_class_mIoU") is not None and entry["tile6_class_mIoU"] is not None:
            entry["forgetting"] = base["tile6_class_mIoU"] - entry["tile6_class_mIoU"]
        entry["max_seconds"] = max(r["seconds"] for r in group)
        summary.append(entry)
    return summary


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_tables(result: dict[str, Any]) -> None:
    base = result["base"]
    print(f"\nbase {result['model']}: building {_cell(base.get('building'))}, road {_cell(base.get('road'))}, "
          f"tile-6 class-level mIoU {_cell(base['tile6_class_mIoU'])}")  # fmt: skip
    print("| N | selection | seed | steps (run/kept) | replay | held-out mIoU | building | road | tile 6 | time |")
    print("| ---: | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in sorted(result["runs"], key=lambda r: (r["n"], r["rule"], r["seed"])):
        plan, after = r["plan"], r["after"]
        steps = f"{plan['steps']} ({plan.get('steps_run')}/{plan.get('kept_step', '-')})"
        replay = plan["replay"]["samples"] if isinstance(plan["replay"], dict) else "none"
        held = f"{r['held_out_mIoU'][0]:.3f} -> {r['held_out_mIoU'][1]:.3f}"
        scores = " | ".join(_cell(after.get(k)) for k in ("building", "road", "tile6_class_mIoU"))
        run = f"| {r['n']} | {r['rule']} | {r['seed']} | {steps} | {replay}"
        print(f"{run} | {held} | {scores} | {r['seconds']:.0f} s |")
    print("\nmeans over seeds | N | selection | building | road | tile-6 forgetting | slowest run")
    for s in result["summary"]:
        print(f"| {s['n']} | {s['rule']} | {_cell(s['building'])} | {_cell(s['road'])} "
              f"| {_cell(s.get('forgetting'))} | {s['max_seconds']:.0f} s |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "spacenet-sample").is_dir():
        print(f"error: {args.data} lacks spacenet-sample/ (../shared/data/README.md)", file=sys.stderr)
        return 2
    import torch

    from annotate.jobs.finetune_job import FinetuneConfig
    from sbanet.inference.shipped import default_model_source

    torch.set_num_threads(args.threads * args.workers)
    model = str(args.model or default_model_source())
    settings = dict(args.set)
    FinetuneConfig(**settings)  # a bad --set fails here, not in every worker
    tile6 = args.tile6 if (args.tile6 / "samples_val.jsonl").is_file() else None
    if tile6 is None:
        print(f"note: no tile-6 conversion at {args.tile6}: forgetting is not measured", file=sys.stderr)
    crops = spacenet_crops(args.data)
    started = time.perf_counter()
    base = score(model, crops["test"], tile6_samples(tile6) if tile6 else [])
    order = list(np.argsort(uncertainties(model, crops["pool"]), kind="stable")[::-1])
    print(f"base scored and pool ranked in {time.perf_counter() - started:.0f} s; "
          f"{', '.join(f'{k}: {len(v)} crops' for k, v in crops.items())}", flush=True)  # fmt: skip
    tasks = plan_tasks(args, order, len(crops["pool"]))
    shared = {"model": model, "data": str(args.data), "tile6": str(tile6) if tile6 else None,
              "replay_root": args.replay_root, "set": settings, "threads": args.threads}  # fmt: skip
    result = {
        "model": model,
        "command": " ".join(["python -m benchmarks.finetune_loop", *(argv if argv is not None else sys.argv[1:])]),
        "finetune_config": {**FinetuneConfig().to_dict(), **settings},
        "crops": {k: [s.sample_id for s in v] for k, v in crops.items()},
        "uncertainty_order": [crops["pool"][i].sample_id for i in order],
        "base": base,
        "runs": [],
    }
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for row in pool.map(run_one, tasks, [shared] * len(tasks)):
            result["runs"].append(row)
            result["summary"] = summarize(result["runs"], base)
            print(json.dumps({k: row[k] for k in ("n", "rule", "seed", "after", "seconds")}), flush=True)
            if args.json:  # after every run: an interrupted benchmark keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({**result, "complete": len(result["runs"]) == len(tasks)}, indent=1))
    print_tables(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
