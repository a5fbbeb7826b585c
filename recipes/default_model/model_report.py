"""What a default-model checkpoint does on tile 6 as users ask: wordings, absent classes, verdicts.

    python -m recipes.default_model.model_report --model sbanet/assets/sbanet-lite-landcover --json report.json
    python -m recipes.default_model.model_report --model runs/default_model/best --calibrate   # thresholds too

Tile 6 of dubai-aerial (never trained on), whole images, as the app runs them:

* **headline**: class-level ("the water") and instance-level ("the largest building") groups by
  the reference protocol (:func:`evaluate_by_rule`), per-class mIoU;
* **chance**: each expression answered with the whole image (IoU = the target's share of it);
* **paraphrases**: every class-level expression asked in each of its class's wordings
  (:data:`sbanet.data.wording.DUBAI_PARAPHRASES`); per class and wording the mIoU, and the
  spread = the largest gap between a wording's mIoU and the canonical wording's;
* **absent classes**: every class with no pixel in an image, asked in each wording: the share
  of the image the mask covers (the goal: empty or < 1 %) and the verdict
  (:func:`sbanet.inference.confidence.judge`); and things no Dubai image holds (:data:`ELSEWHERE`: "a
  purple elephant", "the ships"), reported apart (``elsewhere``);
* **calibration** (``--calibrate``): the "nothing found" / "low confidence" thresholds that
  separate those absent cases from the present class-level ones (see :func:`calibrate`; without
  both kinds of case the checkpoint's own thresholds are kept and ``calibrated`` is False).

The whole-image conversion with absent classes (``runs/data/dubai-referring-whole-asked``) is what
``python -m recipes.default_model.train --config configs/default_model_v4.yaml`` writes (or
``python -m sbanet.data.semantic --crop 0 --negatives 5``); the report reads its val split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbanet.checkpoint import checkpoint_metadata, load_pretrained
from sbanet.data import ReferringDataset, load_samples
from sbanet.data.refsegrs import metadata_file, read_metadata
from sbanet.data.wording import DUBAI_PARAPHRASES
from sbanet.inference.confidence import NOTHING_FOUND, ConfidenceThresholds, judge, mask_statistics
from sbanet.inference.predictor import Predictor
from sbanet.training.evaluation import evaluate
from sbanet.training.metrics import mask_iou
from train.data import blind

# the whole-image conversion with absent classes asked for (recipes.default_model.train.CONVERSIONS)
DEFAULT_DATA = Path("runs/data/dubai-referring-whole-asked")
GROUPS = ("all", "class-level", "instance-level")
# things no dubai-aerial image holds, asked of every image as people try the app (absent too)
ELSEWHERE = ("a purple elephant", "the ships", "the airplanes", "the tennis court")
ABSENT_MAX_AREA = 0.01  # an absent class's mask must be empty or below this share of the image
AREA_GRID = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05)
PROBABILITY_GRID = tuple(round(0.5 + 0.025 * k, 3) for k in range(17))  # 0.5 .. 0.9
MAX_PRESENT_REFUSED = 0.05  # calibration: at most this share of present cases called "nothing found"


def sample_rules(root: str | Path, split: str) -> dict[str, str | None]:
    """``{sample id: rule}`` of a converted folder (``samples_<split>.jsonl``; "class" = class-level)."""
    return {key: record.get("rule") for key, record in read_metadata(metadata_file(root, split)).items()}


def evaluate_by_rule(
    model: torch.nn.Module,
    tokenizer: Any,
    root: str | Path,
    split: str = "val",
    blind_text: bool = False,
    batch_size: int = 16,
) -> dict[str, dict[str, Any]]:
    """The reference protocol (:func:`sbanet.training.evaluation.evaluate`) over one split of a converted
    folder, for ``all`` samples, the ``class-level`` ones (rule ``class``: "the water",
    "all buildings") and the ``instance-level`` ones (every other rule but ``absent``, whose
    empty targets are scored by :func:`absent_summary`), each with its per-category mIoU."""
    rules = sample_rules(root, split)
    # absent-class samples (empty target) are scored by what the model marks, not by IoU
    samples = [s for s in load_samples("folder", root, split) if rules.get(s.ref_id) != "absent"]
    if blind_text:
        samples = blind(samples)
    c = model.config
    dataset = ReferringDataset(samples, c.image_size, tokenizer, c.max_tokens, c.pixel_mean, c.pixel_std)

    def group_of(sample: Any) -> str:
        return "class-level" if rules.get(sample.ref_id) == "class" else "instance-level"

    result = evaluate(model, dataset, batch_size=batch_size, group_of=group_of)
    groups = result.pop("groups")
    result.pop("per_sample")
    return {"all": result, **{name: groups[name] for name in GROUPS[1:] if name in groups}}


def paraphrase_scores(model: torch.nn.Module, tokenizer: Any, root: Path, split: str = "val") -> dict[str, Any]:
    """Every class-level sample of ``root``'s ``split`` in each wording of its class ->
    ``{class: {"wordings": {wording: mIoU}, "canonical": wording, "spread": max |gap|, "n": count}}``."""
    rules = sample_rules(root, split)
    samples = [s for s in load_samples("folder", root, split) if rules.get(s.ref_id) == "class"]
    asked = [
        dataclasses.replace(s, sample_id=f"{s.sample_id}|{wording}", expression=wording)
        for s in samples
        for wording in DUBAI_PARAPHRASES.get(s.category, ())
    ]
    if not asked:
        return {}
    c = model.config
    dataset = ReferringDataset(asked, c.image_size, tokenizer, c.max_tokens, c.pixel_mean, c.pixel_std, cache_size=16)
    groups = evaluate(model, dataset, batch_size=16, group_of=lambda s: f"{s.category}|{s.expression}")["groups"]
    result: dict[str, Any] = {}
    for category, wordings in DUBAI_PARAPHRASES.items():
        scores = {w: groups[f"{category}|{w}"]["mIoU"] for w in wordings if f"{category}|{w}" in groups}
        if not scores:
            continue
        canonical = wordings[0]
        result[category] = {
            "wordings": scores,
            "canonical": canonical,
            "spread": max(abs(v - scores[canonical]) for v in scores.values()),
            "n": groups[f"{category}|{canonical}"]["count"],
        }
    return result


def asked_cases(
    predictor: Predictor,
    root: Path,
    split: str = "val",
    wordings: Mapping[str, Sequence[str]] = DUBAI_PARAPHRASES,
    elsewhere: Sequence[str] = ELSEWHERE,
) -> list[dict[str, Any]]:
    """One row per (image, class, wording) for the class-level referents of ``root``'s ``split``
    (present) and its absent-class samples (absent): the mask's share of the image, the mean
    probability inside it, and (present) its IoU at the image's size. Each class is asked in its
    ``wordings`` (a class without: the sample's own expression), and every image for ``elsewhere``."""
    rules = sample_rules(root, split)
    by_image: dict[str, list[Any]] = defaultdict(list)
    for sample in load_samples("folder", root, split):
        if rules.get(sample.ref_id) in ("class", "absent"):
            by_image[sample.image_id].append(sample)
    rows = []
    for image_id, samples in sorted(by_image.items()):
        image = samples[0].load_image()
        asked = [(s, w) for s in samples for w in wordings.get(s.category, (s.expression,))]
        asked += [(None, w) for w in elsewhere]
        predictions = predictor.predict_batch(image, [w for _, w in asked], return_attention=False)
        nothing = np.zeros(predictions[0].mask.shape, bool)
        targets = {s.sample_id: np.asarray(s.load_mask(), bool) for s in samples}  # read once, asked in 6 wordings
        for (sample, wording), prediction in zip(asked, predictions):
            target = targets[sample.sample_id] if sample else nothing
            area, inside = mask_statistics(prediction.mask, prediction.probability)
            rows.append(
                {
                    "image": image_id,
                    "category": sample.category if sample else "elsewhere",
                    "wording": wording,
                    "present": bool(target.any()),
                    "target_fraction": float(target.mean()),
                    "area_fraction": area,
                    "mean_probability": inside,
                    "iou": mask_iou(prediction.mask, target) if prediction.mask.any() or target.any() else None,
                }
            )
    return rows


class _Statistics:
    """What :func:`judge` reads (``mask``, ``probability``), rebuilt from a row's two numbers."""

    def __init__(self, row: dict[str, Any], pixels: int = 10_000) -> None:
        self.mask = np.zeros((1, pixels), bool)
        self.mask[0, : round(row["area_fraction"] * pixels)] = True
        self.probability = np.where(self.mask, row["mean_probability"] or 0.0, 0.0).astype(np.float32)


def verdict_counts(rows: list[dict[str, Any]], thresholds: ConfidenceThresholds) -> dict[str, dict[str, int]]:
    """``{"present" | "absent": {verdict: count}}`` under ``thresholds``."""
    counts: dict[str, dict[str, int]] = {"present": defaultdict(int), "absent": defaultdict(int)}
    for row in rows:
        counts["present" if row["present"] else "absent"][judge(_Statistics(row), thresholds).label] += 1
    return {k: dict(v) for k, v in counts.items()}


def calibrate(rows: list[dict[str, Any]]) -> ConfidenceThresholds:
    """Thresholds fitted to ``rows`` (:func:`asked_cases`).

    "Nothing found" (``min_area_fraction``, ``min_mean_probability``): of the grid pairs that
    call at most :data:`MAX_PRESENT_REFUSED` more of the present cases "nothing found" than the
    model's own empty masks do, the one that calls the most absent cases so (ties: the smaller
    thresholds). "Low confidence"
    (``confident_mean_probability``): among present cases that are not refused, the cut that best
    separates masks with IoU >= 0.5 from worse ones (balanced accuracy)."""
    present = [r for r in rows if r["present"]]
    absent = [r for r in rows if not r["present"]]
    if not present or not absent:
        raise ValueError("calibration needs present and absent cases")

    def refused(row: dict[str, Any], area: float, probability: float) -> bool:
        inside = row["mean_probability"]
        return row["area_fraction"] < area or inside is None or inside < probability

    # present cases the model already leaves empty are refused by any thresholds: the budget
    # counts on top of them
    empty = sum(r["mean_probability"] is None for r in present) / len(present)
    best: tuple[float, float, float] | None = None
    for area, probability in product(AREA_GRID, PROBABILITY_GRID):
        lost = sum(refused(r, area, probability) for r in present) / len(present)
        if lost > empty + MAX_PRESENT_REFUSED:
            continue
        caught = sum(refused(r, area, probability) for r in absent) / len(absent)
        if best is None or caught > best[0]:
            best = (caught, area, probability)
    caught, area, probability = best if best is not None else (0.0, 0.0, 0.0)
    kept = [r for r in present if not refused(r, area, probability)]

    def balanced(cut: float) -> float:
        good = [r for r in kept if (r["iou"] or 0.0) >= 0.5]
        bad = [r for r in kept if (r["iou"] or 0.0) < 0.5]
        hit = sum(r["mean_probability"] >= cut for r in good) / len(good) if good else 1.0
        flag = sum(r["mean_probability"] < cut for r in bad) / len(bad) if bad else 1.0
        return (hit + flag) / 2

    cuts = [p for p in PROBABILITY_GRID if p >= probability] or [probability]
    confident = max(cuts, key=lambda cut: (balanced(cut), -cut))
    return ConfidenceThresholds(area, probability, confident)


def absent_summary(rows: list[dict[str, Any]], thresholds: ConfidenceThresholds) -> dict[str, Any]:
    """The absent-class cases (the five classes, where an image has none): how many masks are
    empty or below :data:`ABSENT_MAX_AREA`, how many verdicts say "nothing found", per class; and
    the same counts for :data:`ELSEWHERE` (``elsewhere``)."""

    def counts(cases: list[dict[str, Any]]) -> dict[str, Any]:
        small = [r["area_fraction"] < ABSENT_MAX_AREA for r in cases]
        nothing = [judge(_Statistics(r), thresholds).label == NOTHING_FOUND for r in cases]
        return {
            "cases": len(cases),
            "images": len({r["image"] for r in cases}),
            "below_1_percent": sum(small),
            "rate_below_1_percent": sum(small) / len(cases) if cases else None,
            "nothing_found": sum(nothing),
            "median_area_fraction": float(np.median([r["area_fraction"] for r in cases])) if cases else None,
        }

    absent = [r for r in rows if not r["present"] and r["category"] != "elsewhere"]
    per_class: dict[str, list[bool]] = defaultdict(list)
    for row in absent:
        per_class[row["category"]].append(row["area_fraction"] < ABSENT_MAX_AREA)
    elsewhere = [r for r in rows if r["category"] == "elsewhere"]
    return {
        **counts(absent),
        "per_class_rate": {k: sum(v) / len(v) for k, v in sorted(per_class.items())},
        "elsewhere": counts(elsewhere),
    }


def chance(root: Path, split: str = "val", per_class: bool = False) -> dict[str, float]:
    """Mean IoU of answering every expression with the whole image, per group (``per_class``:
    of the class-level expressions, per category, keyed ``class-level/<category>``)."""
    rules = sample_rules(root, split)
    shares: dict[str, list[float]] = defaultdict(list)
    for sample in load_samples("folder", root, split):
        rule = rules.get(sample.ref_id)
        if rule != "absent":
            group = "class-level" if rule == "class" else "instance-level"
            share = float(np.asarray(sample.load_mask(), bool).mean())
            shares[group].append(share)
            if per_class and rule == "class":
                shares[f"class-level/{sample.category}"].append(share)
    return {group: float(np.mean(values)) for group, values in shares.items()}


def report(model_dir: str | Path, root: Path = DEFAULT_DATA, do_calibrate: bool = False) -> dict[str, Any]:
    """Everything in the module docstring for the checkpoint at ``model_dir``."""
    if not (root / "samples_val.jsonl").is_file():
        raise ValueError(f"{root} has no val split: run python -m recipes.default_model.train (it converts the data)")
    model, tokenizer = load_pretrained(model_dir)
    model.eval()
    headline = evaluate_by_rule(model, tokenizer, root, "val")
    paraphrases = paraphrase_scores(model, tokenizer, root)
    rows = asked_cases(Predictor(model, tokenizer), root)
    kinds = {r["present"] for r in rows}
    do_calibrate = do_calibrate and kinds == {True, False}  # fitting needs present and absent cases
    thresholds = calibrate(rows) if do_calibrate else ConfidenceThresholds.from_metadata(checkpoint_metadata(model_dir))
    return {
        "model": str(model_dir),
        "data": str(root),
        "headline": headline,
        "chance": chance(root),
        "paraphrases": paraphrases,
        "paraphrase_spread": max((p["spread"] for p in paraphrases.values()), default=None),
        "absent": absent_summary(rows, thresholds),
        "thresholds": dataclasses.asdict(thresholds),
        "calibrated": do_calibrate,
        "verdicts": verdict_counts(rows, thresholds),
        "rows": rows,
    }


def print_report(result: dict[str, Any]) -> None:
    h = result["headline"]
    for group in ("class-level", "instance-level"):
        m = h.get(group)
        if m:
            print(f"{group:15} n={m['count']:3}  mIoU {100 * m['mIoU']:.1f}  oIoU {100 * m['oIoU']:.1f}")
    per_class = h["class-level"]["category_mIoU"].items()
    print("class-level per class: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in per_class))
    print("chance (whole image): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in result["chance"].items()))
    for category, p in result["paraphrases"].items():
        words = ", ".join(f"{w!r} {100 * v:.1f}" for w, v in p["wordings"].items())
        print(f"  {category:11} spread {100 * p['spread']:.1f}  ({words})")
    a = result["absent"]
    print(
        f"absent classes: {a['below_1_percent']}/{a['cases']} masks below 1 % of the image "
        f"({100 * (a['rate_below_1_percent'] or 0):.0f} %), {a['nothing_found']} 'nothing found'; thresholds "
        f"{result['thresholds']} ({'calibrated here' if result['calibrated'] else 'from the checkpoint'})"
    )
    e = a["elsewhere"]
    print(
        f"things no Dubai image holds {ELSEWHERE}: {e['below_1_percent']}/{e['cases']} below 1 %, "
        f"{e['nothing_found']} 'nothing found'"
    )
    print(f"verdicts: {result['verdicts']}")


def latency(models: dict[str, str | Path], image: np.ndarray, expression: str = "the water", repeats: int = 15) -> dict:
    """Median seconds per ``predict`` call (one expression, no attention maps) of each model, the
    models taking turns call by call so that a busy machine slows them alike; a new expression
    each time (the text cache would hide the text encoder)."""
    predictors = {name: Predictor.from_pretrained(path) for name, path in models.items()}
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for k in range(repeats + 2):  # two warm-up rounds
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.predict(image, f"{expression} {k}", return_attention=False)
            if k >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.default_model.model_report", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint directory")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the whole-image conversion")
    p.add_argument("--calibrate", action="store_true", help="fit the verdict thresholds to tile 6")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--latency-against", help="also time predict() against this checkpoint, side by side")
    args = p.parse_args(argv)
    try:
        result = report(args.model, args.data, args.calibrate)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(result)
    if args.latency_against:
        image = next(iter(load_samples("folder", args.data, "val"))).load_image()
        result["latency_s"] = latency({"model": args.model, "against": args.latency_against}, image)
        result["latency_image"] = list(image.shape)
        print(f"latency per expression: {result['latency_s']} (image {image.shape[1]}x{image.shape[0]})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
