"""Calibrate "nothing found" / "low confidence" (:mod:`sbanet.confidence`) on real images.

    python -m benchmarks.confidence --model sbanet/assets/sbanet-lite-dubai \\
        --json benchmarks/results/confidence.json

Every dubai-aerial tile 6 image (never trained on) is asked for each land-cover class and for a
few things no Dubai image holds ("a purple elephant", "the ships", "the airplanes"). An
expression counts as *present* where its class covers at least ``MIN_PRESENT`` of the image and
*absent* where it covers none of it (classes in between are left out). For each case the script
records the two statistics :func:`sbanet.confidence.judge` reads (mask area fraction, mean
probability inside the mask), prints them, and scores thresholds: how many present cases each
verdict keeps as "found" and how many absent ones it calls "nothing found".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASS_EXPRESSIONS = {
    "the water": "water",
    "all buildings": "building",
    "the roads": "road",
    "the vegetation": "vegetation",
}
NONSENSE = ("a purple elephant", "the ships", "the airplanes")
MIN_PRESENT = 0.05
MAX_ABSENT = 0.0


def cases(predictor: Any, folder: Path) -> list[dict[str, Any]]:
    """One row per (image, expression): present or absent, and the prediction's statistics."""
    from sbanet.confidence import mask_statistics
    from sbanet.data.semantic import DUBAI_CLASSES, decode_label_mask, find_pairs
    from sbanet.image import read_image, to_rgb8

    names = [c.name for c in DUBAI_CLASSES]
    rows = []
    for _, image_path, mask_path in find_pairs(folder):
        labels, _ = decode_label_mask(to_rgb8(read_image(mask_path)), DUBAI_CLASSES)
        fractions = {e: float((labels == names.index(c)).mean()) for e, c in CLASS_EXPRESSIONS.items()}
        wanted = {e: f >= MIN_PRESENT for e, f in fractions.items() if f >= MIN_PRESENT or f <= MAX_ABSENT}
        wanted.update(dict.fromkeys(NONSENSE, False))
        image = to_rgb8(read_image(image_path))
        for prediction in predictor.predict_batch(image, list(wanted), return_attention=False):
            area, inside = mask_statistics(prediction.mask, prediction.probability)
            rows.append(
                {
                    "image": image_path.name,
                    "expression": prediction.expression,
                    "present": wanted[prediction.expression],
                    "class_fraction": round(fractions.get(prediction.expression, 0.0), 4),
                    "area_fraction": round(area, 4),
                    "mean_probability": None if inside is None else round(inside, 4),
                }
            )
    return rows


def score(rows: list[dict[str, Any]], thresholds: Any) -> dict[str, Any]:
    """How the verdicts of ``thresholds`` split present and absent cases."""
    from sbanet.confidence import VERDICTS, Verdict, judge

    counts: dict[str, dict[str, int]] = {"present": dict.fromkeys(VERDICTS, 0), "absent": dict.fromkeys(VERDICTS, 0)}
    for row in rows:
        verdict: Verdict = judge(_Stats(row), thresholds)
        counts["present" if row["present"] else "absent"][verdict.label] += 1
    return counts


class _Stats:
    """A prediction-like object rebuilt from a row's statistics (what :func:`judge` reads)."""

    def __init__(self, row: dict[str, Any]) -> None:
        inside = row["mean_probability"]
        pixels = 10_000
        on = round(row["area_fraction"] * pixels)
        self.mask = np.zeros((1, pixels), bool)
        self.mask[0, :on] = True
        self.probability = np.where(self.mask, inside if inside is not None else 0.0, 0.0).astype(np.float32)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "p10": ordered[len(ordered) // 10],
        "median": round(statistics.median(ordered), 4),
        "p90": ordered[(9 * len(ordered)) // 10],
        "max": ordered[-1],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "sbanet" / "assets" / "sbanet-lite-dubai"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dubai-aerial" / "tile6"))
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)

    from sbanet.checkpoint import checkpoint_metadata
    from sbanet.confidence import ConfidenceThresholds
    from sbanet.predictor import Predictor

    predictor = Predictor.from_pretrained(args.model)
    rows = cases(predictor, Path(args.data))
    thresholds = ConfidenceThresholds.from_metadata(checkpoint_metadata(args.model))
    summary = {
        group: {
            "cases": len(subset),
            "area_fraction": spread([r["area_fraction"] for r in subset]),
            "mean_probability": spread([r["mean_probability"] for r in subset if r["mean_probability"] is not None]),
        }
        for group, subset in (
            ("present", [r for r in rows if r["present"]]),
            ("absent", [r for r in rows if not r["present"]]),
        )
    }
    result = {
        "model": args.model,
        "thresholds": asdict(thresholds),
        "verdicts": score(rows, thresholds),
        "summary": summary,
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "command": "python -m benchmarks.confidence " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    for row in rows:
        print(
            f"{row['image']:22} {row['expression']:20} {'present' if row['present'] else 'absent ':8}"
            f" area {row['area_fraction']:.4f}  mean P {row['mean_probability']}"
        )
    print(json.dumps({k: result[k] for k in ("thresholds", "verdicts", "summary")}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
