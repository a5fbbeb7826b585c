"""``python -m train.finetune``: fine-tune a model version of the annotation store on its accepted
corrections, measure it on held-out reviewed samples, and register the result.

Examples::

    # register a checkpoint as the base (or pass a model version id); the steps follow the number
    # of accepted corrections, with a replay of the base's own training data (its recipe's folders
    # from the working directory, else "no replay: <reason>") and early stopping on held-out masks
    python -m train.finetune --store sqlite:///sbanet-data/store.sqlite --base runs/lite/best
    # a fixed budget, another replay dataset, no early stopping
    python -m train.finetune --base 3 --steps 200 --replay-kind rrsisd --replay-root /data/RRSIS-D --no-early-stop
    python -m train.finetune --base 3 --no-replay   # corrections only
    python -m train.finetune --list                 # runs and their state
    python -m train.finetune --cancel 7             # ask run 7 to stop (from any process)
    python -m train.finetune --resume 7             # run a requeued run (after a crash)

At start, runs whose worker died are requeued (``--no-resume-stale``: marked failed instead).
The job itself is :mod:`annotate.jobs.finetune_job`; this is only its command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from annotate import make_store
from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, recover, run_finetune
from annotate.jobs.finetune_record import JobProgress
from annotate.store import runs
from annotate.store.database import Store
from sbanet.checkpoint import checkpoint_metadata, resolve_source
from sbanet.inference.precision import PRECISION_ENV, TRAINING_PRECISIONS, precision_from_env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="SQLAlchemy URL of the store (default: SQLite in the data folder)")
    parser.add_argument("--data-dir", help="the store's data folder (default $SBANET_DATA_DIR or ./sbanet-data)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--base", help="model version id, or a checkpoint directory to register as one")
    action.add_argument("--resume", type=int, metavar="RUN", help="run a queued (e.g. requeued) run")
    action.add_argument("--cancel", type=int, metavar="RUN", help="ask a run to stop")
    action.add_argument("--list", action="store_true", help="list the fine-tune runs")
    parser.add_argument("--author", default="finetune-cli")
    parser.add_argument("--no-resume-stale", action="store_true", help="mark dead runs failed instead of requeuing")
    defaults = FinetuneConfig()
    for name in (
        "batch_size", "min_steps", "max_steps", "patience", "warmup_steps", "recalibrate_bn", "seed", "min_replay"
    ):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--steps", type=int, help="optimiser steps (default: passes x training set / batch)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between held-out checks (default: 1/6 of the run)")
    parser.add_argument("--max-eval", type=int, help="measure on at most this many held-out masks")
    parser.add_argument("--no-early-stop", action="store_true", help="train all steps, keep the last weights")
    for name in ("passes", "lr", "encoder_lr_mult", "weight_decay", "replay_ratio"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--train-text-encoder", action="store_true", help="fine-tune the text encoder too")
    parser.add_argument("--train-batchnorm", action="store_true", help="update BatchNorm statistics on the batches")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--precision", default=precision_from_env(defaults.precision), choices=TRAINING_PRECISIONS,
        help=f"fp32, bf16 or fp16 (default: ${PRECISION_ENV} when set, else fp32)",
    )  # fmt: skip
    parser.add_argument("--eval-splits", nargs="+", default=list(defaults.eval_splits))
    parser.add_argument("--typed-only", action="store_true", help="train on app corrections only, not imports")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument(
        "--replay-kind", default=defaults.replay_kind, help="'auto' (the base's recipe data) or a dataset kind"
    )
    replay.add_argument("--no-replay", action="store_true", help="train on the corrections alone")
    parser.add_argument("--replay-root", help="kind: its folder; auto: where the recipe's relative paths start")
    parser.add_argument("--replay-split", default=defaults.replay_split)
    parser.add_argument("--replay-options", type=json.loads, default={}, help='reader options as JSON, e.g. {"n": 8}')
    parser.add_argument("--activate", action="store_true", help="make the new model active if it beats the base")
    parser.add_argument("--allow-pickle", action="store_true", help="the base is a trusted .pt checkpoint")
    return parser


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The options named like :class:`FinetuneConfig` fields, plus the inverted switches."""
    values = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig) if hasattr(args, f.name)}
    values.update(
        freeze_text_encoder=not args.train_text_encoder,
        freeze_batchnorm=not args.train_batchnorm,
        include_imported=not args.typed_only,
        eval_splits=tuple(args.eval_splits),
        early_stop=not args.no_early_stop,
        replay_kind=None if args.no_replay else args.replay_kind,
    )
    return FinetuneConfig(**values)


def resolve_base(store: Store, base: str) -> int:
    """A model version id, or a checkpoint directory registered as a new model version."""
    if base.isdigit():
        with store.ReadSession() as session:
            return runs.get_model_version(session, int(base)).id

    path = resolve_source(base)
    config = json.loads((path / "config.json").read_text()).get("config", {}) if path.is_dir() else {}
    with store.Session.begin() as session:
        model = runs.add_model_version(
            session,
            name=Path(base).name or base,
            checkpoint=runs.stored_checkpoint(store.files, path),
            preset=config.get("name", "unknown"),
            metrics=checkpoint_metadata(path) or None,
        )
        return model.id


def _printer() -> Callable[[JobProgress], None]:
    shown: dict[str, float] = {"fraction": -1.0}

    def show(progress: JobProgress) -> None:
        if progress.fraction - shown["fraction"] >= 0.05 or progress.stage == "done":
            shown["fraction"] = progress.fraction
            print(f"[{progress.fraction:6.1%}] {progress.stage}: {progress.message}", file=sys.stderr, flush=True)

    return show


def _miou(metrics: dict | None) -> float | None:
    return metrics.get("mIoU") if metrics else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        store = make_store(args.store, args.data_dir)
        for run_id in recover(store, resume=not args.no_resume_stale):
            print(f"run {run_id}: its worker died; {'marked failed' if args.no_resume_stale else 'requeued'}")
        if args.list:
            with store.ReadSession() as session:
                for run in runs.list_runs(session):
                    before, after = (m["mIoU"] if m else None for m in (run.metrics_before, run.metrics_after))
                    models = f"model {run.base_model_id} -> {run.result_model_id}"
                    print(
                        f"run {run.id}: {run.status} {run.progress:.0%} ({run.stage}) {models} mIoU {before} -> {after}"
                    )
            return 0
        if args.cancel is not None:
            with store.Session.begin() as session:
                print(f"run {args.cancel}: {runs.request_cancel(session, args.cancel).status}")
            return 0
        run_id = args.resume
        if run_id is None:
            run_id = queue_finetune(store, resolve_base(store, args.base), config_from_args(args), author=args.author)
        outcome = run_finetune(store, run_id, callback=_printer())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    before, after = (
        metrics.get("mIoU") if metrics else None for metrics in (outcome.metrics_before, outcome.metrics_after)
    )
    result = {"run": outcome.run_id, "status": outcome.status, "model_version": outcome.model_version_id}
    print(json.dumps({**result, "mIoU_before": before, "mIoU_after": after}))
    return 0 if outcome.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
