"""Measure the human-in-the-loop loop: a base model, N ground-truth masks accepted as corrections,
one fine-tune run of the store's job, held-out mIoU before and after.

For each dataset and N, a fresh store gets the held-out samples (split ``val``) and N samples of
the correction pool (split ``train``, drawn with a fixed seed) as accepted masks; then
:func:`annotate.finetune.run_finetune` trains the registered base model on the N masks for a
fixed number of steps (the same compute for every N) and measures base and new model on the same
held-out samples. Prints a table and writes ``<out>/results.json``.

The base model (unless ``--base`` names one) is ``--preset`` with its pretrained encoders, trained
by :func:`sbanet.engine.train` on synthetic scenes of another seed than the correction pool::

    python -m train.finetune_bench --out bench-results/finetune-loop --datasets synthetic dubai \\
        --dubai-root /tmp/dubai-referring
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotate import make_store, runs
from annotate.finetune import FinetuneConfig, queue_finetune, run_finetune
from annotate.transfer import import_samples
from sbanet.build import build_preset
from sbanet.checkpoint import save_pretrained
from sbanet.data import ReferringDataset, ReferringSample, load_samples
from sbanet.engine import TrainConfig, recalibrate_batchnorm, train
from sbanet.evaluation import forward_batch
from sbanet.modeling.text_encoder import load_tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.finetune_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results/finetune-loop")
    parser.add_argument("--datasets", nargs="+", default=["synthetic"], choices=["synthetic", "dubai"])
    parser.add_argument("--dubai-root", help="the Dubai conversion (a 'folder' dataset with train/val splits)")
    parser.add_argument("--ns", nargs="+", type=int, default=[10, 30, 100])
    parser.add_argument("--base", help="a base checkpoint; default: train one on synthetic scenes")
    parser.add_argument("--preset", default="sbanet_lite")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--base-steps", type=int, default=120)
    parser.add_argument("--base-images", type=int, default=30)
    parser.add_argument("--steps", type=int, default=50, help="fine-tune optimiser steps (same for every N)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--held-out-images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def train_base(args: argparse.Namespace, out: Path) -> Path:
    """The preset with pretrained encoders, trained on synthetic scenes of seed 0."""
    torch.manual_seed(args.seed)
    model = build_preset(args.preset, pretrained=args.preset != "sbanet_tiny", image_size=args.image_size)
    tokenizer = load_tokenizer(model.config.text_model)
    samples = load_samples("synthetic", None, "train", n_images=args.base_images, seed=0, size=args.image_size)
    data = ReferringDataset(samples, args.image_size, tokenizer, model.config.max_tokens)
    config = TrainConfig(batch_size=args.batch_size, lr=2e-4, encoder_lr_mult=0.1, max_steps=args.base_steps,
                         freeze_text_encoder=True, device="cpu", seed=args.seed)  # fmt: skip
    started = time.perf_counter()
    train(model, data, None, config, tokenizer=tokenizer)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True)
    recalibrate_batchnorm(model, (b for _, b in zip(range(10), loader)), forward_batch)
    print(f"base: {args.base_steps} steps on {len(samples)} synthetic samples in {time.perf_counter() - started:.0f} s")
    return save_pretrained(model, out / "base", tokenizer=tokenizer, metadata={"trained_on": "synthetic seed 0"})


def pools(args: argparse.Namespace, dataset: str) -> tuple[list[ReferringSample], list[ReferringSample]]:
    """(correction pool, held-out samples) of a dataset."""
    if dataset == "synthetic":
        options = {"seed": 1, "size": args.image_size}
        n_pool = max(args.ns) // 3 + 10  # (scenes have ~30 expressions: a wide pool of scenes to draw from)
        pool = load_samples("synthetic", None, "train", n_images=n_pool, **options)
        return pool, load_samples("synthetic", None, "val", n_images=args.held_out_images, **options)
    if not args.dubai_root:
        raise ValueError("--dubai-root is needed for the dubai dataset")
    return load_samples("folder", args.dubai_root, "train"), load_samples("folder", args.dubai_root, "val")


def one_loop(args: argparse.Namespace, out: Path, base: Path, dataset: str, n: int) -> dict[str, Any]:
    pool, held_out = pools(args, dataset)
    if len(pool) < n:
        raise ValueError(f"{dataset}: only {len(pool)} samples to draw {n} corrections from")
    chosen = sorted(np.random.default_rng(args.seed).choice(len(pool), n, replace=False))
    store = make_store(f"sqlite:///{out / f'{dataset}-n{n}.sqlite'}", out / f"{dataset}-n{n}")
    import_samples(store, [pool[i] for i in chosen] + held_out, author="ground-truth")
    with store.Session.begin() as session:
        base_id = runs.add_model_version(session, name="base", checkpoint=str(base), preset=args.preset).id
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, encoder_lr_mult=0.1,
                            recalibrate_bn=10, seed=args.seed, device="cpu", eval_splits=("val",))  # fmt: skip
    started = time.perf_counter()
    outcome = run_finetune(store, queue_finetune(store, base_id, config, author="bench"))
    seconds = time.perf_counter() - started
    store.close()
    before, after = outcome.metrics_before, outcome.metrics_after
    return {
        "dataset": dataset, "corrections": n, "held_out": before["count"], "steps": args.steps,
        "mIoU_before": before["mIoU"], "mIoU_after": after["mIoU"],
        "oIoU_before": before["oIoU"], "oIoU_after": after["oIoU"], "seconds": round(seconds, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.base) if args.base else train_base(args, out)
    rows = []
    for dataset in args.datasets:
        for n in args.ns:
            rows.append(one_loop(args, out, base, dataset, n))
            print(json.dumps(rows[-1]), flush=True)
            (out / "results.json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    print("| dataset | N corrections | held-out samples | mIoU before | mIoU after | oIoU before | oIoU after | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        scores = " | ".join(f"{r[k]:.3f}" for k in ("mIoU_before", "mIoU_after", "oIoU_before", "oIoU_after"))
        print(f"| {r['dataset']} | {r['corrections']} | {r['held_out']} | {scores} | {r['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
