"""Speed, memory and agreement benchmark: ``python -m benchmarks.bench [--quick] [--out bench.json]``.

Every configuration runs in its own fresh process (so peak memory is per configuration); timed
ones run ``--rounds`` times in round-robin order. Prints a markdown report (targets, latency,
agreement, training throughput, per-component profile) and writes everything to JSON::

    python -m benchmarks.bench --out bench.json                      # everything (tens of minutes)
    python -m benchmarks.bench --quick                               # ~2 minutes on a quiet machine
    python -m benchmarks.bench --parts speed,multi --rounds 3        # noisy machine: more rounds
    python -m benchmarks.bench --parts precision --images 9          # bf16 per component vs fp32, tile 6
    python -m benchmarks.bench --parts speed,multi --device cuda --precisions fp32,bf16 \\
        --expressions 1,8                                       # GPU inference (benchmarks/gpu_bench.sh)
    python -m benchmarks.bench --parts train --train-presets sbanet_swin_b --device cuda --dtype bf16 \\
        --batch 12 --train-steps 20 --train-warmup 5            # GPU training (benchmarks/gpu_bench.sh)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks.speed import PARTS, Settings, markdown_report, run_suite
from benchmarks.speed.report import evaluate_targets
from sbanet.inference.runtime import machine_description

QUICK = dict(parts=("speed", "small", "agreement"), repeats=2, warmup=1, images=2, texts=("the water", "the buildings"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="parts speed,small,agreement; 2 runs; 2 images")
    p.add_argument("--repeats", type=int, help="timed runs per process (default 5, quick 2)")
    p.add_argument("--warmup", type=int, help="untimed runs per process first (default 1)")
    p.add_argument("--rounds", type=int, default=1, help="processes per timed configuration, round-robin")
    p.add_argument("--threads", type=int, help="torch threads in each process (default: torch's choice)")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--tokens", type=int, default=20, help="expression length in tokens, [CLS]/[SEP] included")
    p.add_argument("--expressions", default="1,2,4,8", help="K values of the multi part")
    p.add_argument(
        "--multi-models", default="sbanet_swin_b,shipped", help="the multi part's models: sbanet_swin_b, shipped"
    )
    p.add_argument("--data", default="../shared/data/dubai-aerial", help="real images for the agreement part")
    p.add_argument("--images", type=int, help="how many real images (default 4, quick 2)")
    p.add_argument("--train-presets", default="sbanet_tiny,sbanet_lite,sbanet_swin_b")
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps per preset")
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=2, help="training batch size")
    p.add_argument("--train-image-size", type=int, help="training image size (default: each preset's own)")
    p.add_argument("--device", default="cpu", help="device for inference and training, e.g. cuda")
    p.add_argument(
        "--precisions",
        default="fp32",
        help="inference precisions of the speed and multi parts: fp32,bf16[,fp16 on CUDA]",
    )
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="training autocast dtype")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a configuration's process is stopped")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON results")
    p.add_argument("--markdown", type=Path, help="also write the markdown report to this file")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    quick = QUICK if args.quick else {}
    parts = quick.get("parts") if args.quick else tuple(p.strip() for p in args.parts.split(",") if p.strip())
    return Settings(
        parts=parts,
        repeats=args.repeats or quick.get("repeats", 5),
        warmup=args.warmup if args.warmup is not None else quick.get("warmup", 1),
        rounds=args.rounds,
        threads=args.threads,
        image_size=args.image_size,
        tokens=args.tokens,
        expressions=tuple(int(k) for k in args.expressions.split(",")),
        data=args.data,
        images=args.images or quick.get("images", 4),
        texts=quick.get("texts", Settings.texts),
        train_presets=tuple(p.strip() for p in args.train_presets.split(",") if p.strip()),
        train_steps=args.train_steps,
        train_warmup=args.train_warmup,
        batch=args.batch,
        train_image_size=args.train_image_size,
        device=args.device,
        dtype=args.dtype,
        multi_models=tuple(m.strip() for m in args.multi_models.split(",") if m.strip()),
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        timeout=args.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    machine = machine_description()
    start = time.perf_counter()
    try:
        records = run_suite(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = markdown_report(records, machine, command.strip())
    print(report)
    result = {
        "command": command.strip(),
        "machine": machine,
        "settings": {k: v for k, v in vars(settings).items()},
        "wall_s": time.perf_counter() - start,
        "targets": evaluate_targets(records),
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(report)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)", file=sys.stderr)
    failed = [r for r in records if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
