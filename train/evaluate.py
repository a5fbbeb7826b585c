"""Evaluate a checkpoint by the reference protocol:
``python -m train.evaluate --checkpoint PATH --dataset rrsisd --root DIR --split test``.

Prints the paper's columns (Pr@0.5, Pr@0.7, Pr@0.9, oIoU, mIoU) plus Pr@0.6 / Pr@0.8 and the
mIoU of each category, and writes everything, per-sample IoUs included, as JSON. Checkpoints:
an exported directory (``best/``) or hub id, or, with ``--allow-pickle``, a trainer ``.pt``
(pickles can run code when loaded: only for files you trust). ``--save-overlays DIR`` draws the
worst and best ``--num-overlays`` cases (green: correct, red: false positive, blue: missed).
``--recalibrate-bn N`` first recomputes the BatchNorm statistics on N batches of the training
split ("precise BN"). Under ``torchrun`` the split is sharded over the processes and the metrics
merged.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbanet.checkpoint import load_pretrained
from sbanet.image import to_rgb8
from sbanet.inference.precision import PRECISION_ENV, PRECISIONS, precision_from_env
from sbanet.training import distributed
from sbanet.training.engine import recalibrate_on
from sbanet.training.evaluation import evaluate, forward_batch, to_device
from sbanet.training.metrics import PR_THRESHOLDS, upsample_probability
from train.fit_config import DATASET_KINDS, parse_value

from .data import make_dataset

COLUMNS = ("Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "oIoU", "mIoU")
PAPER_COLUMNS = ("Pr@0.5", "Pr@0.7", "Pr@0.9", "oIoU", "mIoU")  # Tables I-II of the paper


def format_table(result: dict[str, Any], title: str) -> str:
    """The metrics as percentages in the paper's column order (+ Pr@0.6/0.8), then per category."""
    head = " ".join(f"{c:>8}" for c in COLUMNS)
    values = " ".join(f"{100 * result[c]:8.2f}" for c in COLUMNS)
    lines = [f"{title}  ({result['count']} samples)", head, values]
    if result.get("category_mIoU"):
        lines.append("mIoU per category:")
        width = max(len(name) for name in result["category_mIoU"])
        for name, value in sorted(result["category_mIoU"].items()):
            lines.append(f"  {name:<{width}}  {100 * value:6.2f}  (n={result['category_count'][name]})")
    return "\n".join(lines)


def overlay(rgb: np.ndarray, pred: np.ndarray, target: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``[H, W, 3] uint8`` with true positives green, false positives red, misses blue."""
    out = rgb.astype(np.float32)
    for mask, colour in ((pred & target, (0, 200, 0)), (pred & ~target, (230, 0, 0)), (~pred & target, (0, 90, 255))):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return out.round().astype(np.uint8)


def image_on_mask_grid(rgb: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``[H, W, 3] uint8`` resized (bilinear) to the mask's ``[h, w]`` when they differ.

    Some RRSIS-D images are not the size of their RLE masks (e.g. 09976.jpg, 15324.jpg); the
    reference resizes image and mask each to the square input size, so both cover the same
    extent. The overlay does the same onto the mask's grid, where the scores were computed."""
    if rgb.shape[:2] == tuple(shape[:2]):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


@torch.no_grad()
def save_overlays(model: torch.nn.Module, dataset: Any, picks: list[tuple[str, int, float]], directory: Path) -> None:
    """One PNG ``<name>.png`` per ``(name, index, iou)``: the prediction at the image's size, captioned."""
    from PIL import Image, ImageDraw

    directory.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    for name, index, iou in picks:
        sample = dataset.samples[index]
        batch = to_device(torch.utils.data.default_collate([dataset[index]]), device)
        probability = model.probability(forward_batch(model, batch))[0]
        target = np.asarray(sample.load_mask()).astype(bool)
        pred = (upsample_probability(probability, target.shape) > 0.5).cpu().numpy()
        panel = Image.fromarray(overlay(image_on_mask_grid(to_rgb8(sample.load_image()), target.shape), pred, target))
        # the caption wrapped to the panel (PIL's default font is about 6 px a character)
        caption = textwrap.wrap(f"IoU {100 * iou:.1f}: {sample.expression or '(no text)'}", max(12, panel.width // 6))
        top = 4 + 12 * len(caption)
        canvas = Image.new("RGB", (panel.width, panel.height + top), (255, 255, 255))
        canvas.paste(panel, (0, top))
        ImageDraw.Draw(canvas).multiline_text((3, 2), "\n".join(caption), fill=(0, 0, 0), spacing=1)
        canvas.save(directory / f"{name}.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="exported directory, hub id, or trainer .pt")
    p.add_argument("--allow-pickle", action="store_true", help="allow a trainer .pt (only from a trusted source)")
    p.add_argument("--dataset", required=True, choices=DATASET_KINDS)
    p.add_argument("--root", help="dataset folder (not needed for synthetic)")
    p.add_argument("--split", default="test")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="reader option, repeatable")
    p.add_argument("--limit", type=int, help="evaluate the first N samples only")
    p.add_argument("--blind-text", action="store_true", help="replace every expression with '' (the baseline)")
    p.add_argument("--original-resolution", action="store_true", help="score at each image's own size")
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="first recompute BatchNorm statistics on N batches of --recalibrate-split",
    )
    p.add_argument("--recalibrate-split", default="train")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument(
        "--precision", default=precision_from_env("fp32"), choices=PRECISIONS,
        help=f"fp32, bf16 or fp16; auto runs fp32 (default: ${PRECISION_ENV} when set, else fp32)",
    )  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="output JSON (default: eval-<dataset>-<split>.json)")
    p.add_argument("--save-overlays", type=Path, metavar="DIR", help="write overlays of the worst and best cases")
    p.add_argument("--num-overlays", type=int, default=8, metavar="K")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``python -m train.evaluate`` does; returns the JSON report."""
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r} must look like key=value")
        options[key] = parse_value(value)
    info = distributed.init_from_env(args.device)
    try:
        model, tokenizer = load_pretrained(args.checkpoint, allow_pickle=args.allow_pickle, device=info.device)
        dataset = make_dataset(
            args.dataset, args.root, args.split, model.config, tokenizer, options, args.blind_text, args.limit
        )
        if args.recalibrate_bn > 0:
            source = make_dataset(
                args.dataset, args.root, args.recalibrate_split, model.config, tokenizer, options, args.blind_text
            )
            recalibrate_on(model, source, args.recalibrate_bn, args.batch_size, precision=args.precision)
        result = evaluate(
            model, dataset, batch_size=args.batch_size, precision=args.precision, num_workers=args.num_workers,
            original_resolution=args.original_resolution,
        )  # fmt: skip
    finally:
        distributed.cleanup()
    per_sample = result.pop("per_sample")
    samples = dataset.samples
    report = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "root": args.root,
        "split": args.split,
        "options": options,
        "original_resolution": args.original_resolution,
        "blind_text": args.blind_text,
        "recalibrate_bn": {"batches": args.recalibrate_bn, "split": args.recalibrate_split},
        "thresholds": list(PR_THRESHOLDS),
        "metrics": result,
        "per_sample": [
            {"index": i, "sample_id": samples[i].sample_id, "expression": samples[i].expression,
             "category": samples[i].category, "iou": iou}
            for i, iou in per_sample
        ],
    }  # fmt: skip
    if info.is_main:
        title = f"{args.dataset} {args.split}" + (" (original resolution)" if args.original_resolution else "")
        print(format_table(result, title))
        path = args.json or Path(f"eval-{args.dataset}-{args.split}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")
        if args.save_overlays is not None and args.num_overlays > 0:
            ranked = sorted(per_sample, key=lambda pair: (pair[1], pair[0]))
            k = min(args.num_overlays, len(ranked))
            picks = [(f"worst_{n:02d}_sample{i}", i, iou) for n, (i, iou) in enumerate(ranked[:k])]
            picks += [(f"best_{n:02d}_sample{i}", i, iou) for n, (i, iou) in enumerate(ranked[::-1][:k])]
            save_overlays(model, dataset, picks, args.save_overlays)
            print(f"wrote {2 * k} overlays to {args.save_overlays}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
