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
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.data import ReferringDataset, ReferringSample, load_samples
from sbanet.engine import TrainConfig, recalibrate_batchnorm, train
from sbanet.evaluation import evaluate, forward_batch
from sbanet.modeling.text_encoder import load_tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.finetune_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results/finetune-loop")
    parser.add_argument("--datasets", nargs="+", default=["synthetic"], choices=["synthetic", "dubai"])
    parser.add_argument("--dubai-root", help="the Dubai conversion (a 'folder' dataset with train/val splits)")
    parser.add_argument("--ns", nargs="+", type=int, default=[10, 30, 100])
    parser.add_argument("--base", help="a base checkpoint; default: train one on synthetic scenes")
    parser.add_argument("--preset", default="sbanet_lite")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--base-steps", type=int, default=150)
    parser.add_argument("--base-images", type=int, default=60)
    parser.add_argument("--base-lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=60, help="fine-tune optimiser steps (same for every N)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--encoder-lr-mult", type=float, default=0.05, help="pretrained encoders' lr factor")
    parser.add_argument("--replay", action="store_true", help="dubai: also the largest N with a replay")
    parser.add_argument("--held-out-images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def train_base(args: argparse.Namespace, out: Path) -> Path:
    """The preset with pretrained encoders, trained on synthetic scenes of seed 0."""
    torch.manual_seed(args.seed)
    model = build_preset(args.preset, pretrained=args.preset != "sbanet_tiny", image_size=args.image_size)
    tokenizer = load_tokenizer(model.config.text_model)
    data = ReferringDataset(base_samples(args), args.image_size, tokenizer, model.config.max_tokens, cache_size=64)
    config = TrainConfig(
        batch_size=args.batch_size,
        lr=args.base_lr,
        encoder_lr_mult=args.encoder_lr_mult,
        max_steps=args.base_steps,
        freeze_text_encoder=True,
        device="cpu",
        seed=args.seed,
    )
    started = time.perf_counter()
    train(model, data, None, config, tokenizer=tokenizer)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True)
    recalibrate_batchnorm(model, (b for _, b in zip(range(10), loader)), forward_batch)
    print(f"base: {args.base_steps} steps on {len(data)} synthetic samples in {time.perf_counter() - started:.0f} s")
    return save_pretrained(model, out / "base", tokenizer=tokenizer, metadata={"trained_on": "synthetic seed 0"})


def base_samples(args: argparse.Namespace) -> list[ReferringSample]:
    """The base model's training data (and the replay data): synthetic scenes of seed 0."""
    return load_samples("synthetic", None, "train", n_images=args.base_images, seed=0, size=128)


def pools(args: argparse.Namespace, dataset: str) -> tuple[list[ReferringSample], list[ReferringSample]]:
    """(correction pool, held-out samples) of a dataset."""
    if dataset == "synthetic":
        options = {"seed": 1, "size": 128}
        n_pool = max(args.ns) // 3 + 10  # (scenes have ~30 expressions: a wide pool of scenes to draw from)
        pool = load_samples("synthetic", None, "train", n_images=n_pool, **options)
        return pool, load_samples("synthetic", None, "val", n_images=args.held_out_images, **options)
    if not args.dubai_root:
        raise ValueError("--dubai-root is needed for the dubai dataset")
    return load_samples("folder", args.dubai_root, "train"), load_samples("folder", args.dubai_root, "val")


def miou(checkpoint: str, samples: list[ReferringSample], batch_size: int) -> float:
    """A checkpoint's mIoU on samples (here: how much of the base's domain a fine-tune forgot)."""
    model, tokenizer = load_pretrained(checkpoint)
    config = model.config
    data = ReferringDataset(
        samples, config.image_size, tokenizer, config.max_tokens, config.pixel_mean, config.pixel_std
    )
    return float(evaluate(model, data, batch_size=batch_size)["mIoU"])


def one_loop(args: argparse.Namespace, out: Path, base: Path, dataset: str, n: int, replay: bool) -> dict[str, Any]:
    pool, held_out = pools(args, dataset)
    if len(pool) < n:
        raise ValueError(f"{dataset}: only {len(pool)} samples to draw {n} corrections from")
    chosen = sorted(np.random.default_rng(args.seed).choice(len(pool), n, replace=False))
    name = f"{dataset}-n{n}{'-replay' if replay else ''}"
    store = make_store(f"sqlite:///{out / f'{name}.sqlite'}", out / name)
    import_samples(store, [pool[i] for i in chosen] + held_out, author="ground-truth")
    with store.Session.begin() as session:
        base_id = runs.add_model_version(session, name="base", checkpoint=str(base), preset=args.preset).id
    config = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        encoder_lr_mult=args.encoder_lr_mult,
        recalibrate_bn=10,
        seed=args.seed,
        device="cpu",
        eval_splits=("val",),
        replay_kind="synthetic" if replay else None,
        replay_options={"n_images": args.base_images, "seed": 0, "size": 128},
        replay_ratio=1.0,
    )
    started = time.perf_counter()
    outcome = run_finetune(store, queue_finetune(store, base_id, config, author="bench"))
    seconds = time.perf_counter() - started
    with store.ReadSession() as session:
        new_checkpoint = runs.checkpoint_source(store.files, runs.get_model_version(session, outcome.model_version_id))
    store.close()
    before, after = outcome.metrics_before, outcome.metrics_after
    row = {"dataset": dataset, "corrections": n, "replay": replay, "held_out": before["count"], "steps": args.steps}
    for key in ("mIoU", "oIoU"):
        row[f"{key}_before"], row[f"{key}_after"] = before[key], after[key]
    row["seconds"] = round(seconds, 1)
    if dataset != "synthetic":  # what the base's own domain thinks of the fine-tune
        synthetic_held_out = pools(args, "synthetic")[1]
        row["synthetic_mIoU_before"] = miou(str(base), synthetic_held_out, args.batch_size)
        row["synthetic_mIoU_after"] = miou(new_checkpoint, synthetic_held_out, args.batch_size)
    return row


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.base) if args.base else train_base(args, out)
    plan = [(dataset, n, False) for dataset in args.datasets for n in args.ns]
    if args.replay and "dubai" in args.datasets:
        plan.append(("dubai", max(args.ns), True))
    rows = []
    for dataset, n, replay in plan:
        rows.append(one_loop(args, out, base, dataset, n, replay))
        print(json.dumps(rows[-1]), flush=True)
        (out / "results.json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    keys = ("mIoU_before", "mIoU_after", "oIoU_before", "oIoU_after", "synthetic_mIoU_before", "synthetic_mIoU_after")
    print("| dataset | N | replay | held-out | mIoU before | mIoU after | oIoU before | oIoU after "
          "| synthetic mIoU before | after | time |")  # fmt: skip
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        scores = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in keys)
        replay = "yes" if r["replay"] else "no"
        print(f"| {r['dataset']} | {r['corrections']} | {replay} | {r['held_out']} | {scores} | {r['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
