"""A checkpoint on other sources' val splits, class by class, beside the all-foreground mask.

    python -m recipes.default_model.source_report --model sbanet/assets/sbanet-lite-landcover \\
        --data runs/data/gid-referring-whole/gid5 runs/data/gid-referring-whole/gid15 --json gid_v4.json

For each converted folder (e.g. :mod:`sbanet.data.gid`'s ``gid5`` and ``gid15`` whole-image
conversions with absent classes), its val split, whole images at the model's input size:

* class-level mIoU (the reference protocol, :func:`recipes.default_model.model_report.evaluate_by_rule`) in all
  and per class, and the same for answering every expression with the whole image (``chance``:
  the all-foreground mask, IoU = the target's share of the image);
* absent classes: every absent-class sample asked in its own wording: how many masks are empty or
  below 1 % of the image and how many the checkpoint's thresholds call "nothing found"
  (:func:`recipes.default_model.model_report.absent_summary`), and present class-level cases refused;
* ``combined``: the folders' class-level rows pooled (mIoU weighted by their counts).

A model never trained on a source scored on its val split is the leave-one-source-out row of the
docs (v4 on GID: trained on Dubai only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from recipes.default_model.model_report import absent_summary, asked_cases, chance, evaluate_by_rule, verdict_counts
from sbanet.checkpoint import checkpoint_metadata, load_pretrained
from sbanet.inference.confidence import NOTHING_FOUND, ConfidenceThresholds
from sbanet.inference.predictor import Predictor


def source_rows(
    model: Any, tokenizer: Any, thresholds: ConfidenceThresholds, root: Path, split: str = "val", absent: bool = True
) -> dict[str, Any]:
    """The numbers of the module docstring for one converted folder (``model`` in eval mode)."""
    if not (root / f"samples_{split}.jsonl").is_file():
        raise ValueError(f"{root} has no {split} split: convert it first (python -m sbanet.data.gid)")
    start = time.process_time()
    headline = evaluate_by_rule(model, tokenizer, root, split)
    result: dict[str, Any] = {
        "data": str(root),
        "class_level": headline["class-level"],
        "chance": chance(root, split, per_class=True),
    }
    if absent:
        rows = asked_cases(Predictor(model, tokenizer), root, split, wordings={}, elsewhere=("the ships",))
        present = verdict_counts(rows, thresholds)["present"]
        result["absent"] = absent_summary(rows, thresholds)
        result["present_refused"] = {"cases": sum(present.values()), "nothing_found": present.get(NOTHING_FOUND, 0)}
        result["thresholds"] = dataclasses.asdict(thresholds)
    result["cpu_s"] = time.process_time() - start
    return result


def combined(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The class-level rows of several folders pooled: count-weighted mIoU and chance."""
    counts = [r["class_level"]["count"] for r in results]
    total = sum(counts)
    pooled = {
        "count": total,
        "mIoU": sum(n * r["class_level"]["mIoU"] for n, r in zip(counts, results)) / total,
        "chance": sum(n * r["chance"]["class-level"] for n, r in zip(counts, results)) / total,
    }
    absent = [r["absent"] for r in results if "absent" in r]
    if absent:
        cases = sum(a["cases"] for a in absent)
        pooled["absent_cases"] = cases
        pooled["absent_nothing_found"] = sum(a["nothing_found"] for a in absent)
        pooled["absent_below_1_percent"] = sum(a["below_1_percent"] for a in absent)
        present = [r["present_refused"] for r in results]
        pooled["present_cases"] = sum(p["cases"] for p in present)
        pooled["present_refused"] = sum(p["nothing_found"] for p in present)
    return pooled


def markdown(results: list[dict[str, Any]], pooled: dict[str, Any]) -> str:
    """A per-class table (class-level mIoU against the all-foreground mask, percentages)."""
    lines = ["| source | class | n | mIoU | all-foreground |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        name = Path(r["data"]).name
        per_class = r["class_level"]["category_mIoU"]
        for category, miou in sorted(per_class.items()):
            fg = r["chance"].get(f"class-level/{category}", float("nan"))
            n = r["class_level"].get("category_count", {}).get(category, "")
            lines.append(f"| {name} | {category} | {n} | {100 * miou:.1f} | {100 * fg:.1f} |")
        cl, fg = r["class_level"], r["chance"]["class-level"]
        lines.append(f"| {name} | **all classes** | {cl['count']} | **{100 * cl['mIoU']:.1f}** | {100 * fg:.1f} |")
    lines.append(
        f"| pooled | **all** | {pooled['count']} | **{100 * pooled['mIoU']:.1f}** | {100 * pooled['chance']:.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m recipes.default_model.source_report", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, help="a checkpoint directory")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="converted folders (their val split)")
    p.add_argument("--split", default="val")
    p.add_argument("--no-absent", action="store_true", help="skip the absent-class cases (faster)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    try:
        model, tokenizer = load_pretrained(args.model)  # once for every folder
        model.eval()
        thresholds = ConfidenceThresholds.from_metadata(checkpoint_metadata(args.model))
        results = [
            source_rows(model, tokenizer, thresholds, root, args.split, not args.no_absent) for root in args.data
        ]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pooled = combined(results)
    print(markdown(results, pooled))
    if "absent_cases" in pooled:
        print(
            f"absent classes: {pooled['absent_nothing_found']}/{pooled['absent_cases']} 'nothing found', "
            f"{pooled['absent_below_1_percent']} below 1 %; present class-level refused: "
            f"{pooled['present_refused']}/{pooled['present_cases']}"
        )
    print("CPU s: " + ", ".join(f"{Path(r['data']).name} {r['cpu_s']:.0f}" for r in results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "pooled": pooled}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
