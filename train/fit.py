"""Train SBANet: ``python -m train.fit --config configs/X.yaml [section.key=value ...]``.

Overrides use dotted keys, as ``key=value`` or ``--key value``::

    python -m train.fit --config configs/rrsisd_swin_b.yaml data.root=/data/rrsisd
    python -m train.fit --config configs/synthetic_tiny.yaml --model.preset sbanet_lite train.epochs=2
    python -m train.fit --resume runs/synthetic_tiny/last.pt          # continue exactly
    python -m train.fit --resume runs/X --allow-batch-change train.batch_size=6   # rescale the schedule
    torchrun --nproc-per-node 4 -m train.fit --config configs/rrsisd_swin_b.yaml train.batch_size=3

The run folder (``output.dir``) gets ``config.yaml`` (the resolved configuration), ``last.pt``,
``best.pt``, ``best/`` (safetensors, for ``Predictor.from_pretrained``), ``steps.csv``,
``epochs.csv``, ``tensorboard/`` and ``loss.png`` / ``val_metrics.png``. Under ``torchrun`` every
rank trains on its shard; rank 0 logs and writes. The global batch is ``train.batch_size x
processes x train.accumulate`` (the paper: 12). Ctrl-C stops after the current step and saves
``last.pt``, so ``--resume`` picks up from there. Resuming with another global batch (other
processes, batch_size or accumulate) is refused unless ``--allow-batch-change``, which rescales
the schedule to the samples already seen and logs what it changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch
import yaml

from sbanet.build import build_preset
from sbanet.checkpoint import load_pretrained, load_state_dict_checked
from sbanet.modeling.text_encoder import load_tokenizer
from sbanet.training import distributed
from sbanet.training.engine import TrainResult, train
from sbanet.training.train_state import load_training_checkpoint, seed_everything
from train.fit_config import FitConfig, load_config, split_cli_overrides

from .data import make_dataset
from .logger import RunLogger


def build_model_from(config: FitConfig) -> torch.nn.Module:
    """The preset (+ ablation, + config overrides), optionally initialised from a checkpoint."""
    m = config.model
    model = build_preset(m.preset, pretrained=m.pretrained and m.init is None, ablation=m.ablation, **m.overrides)
    if m.init is not None:  # fine-tuning: same architecture, weights from a trained model
        source, _ = load_pretrained(m.init, allow_pickle=Path(m.init).suffix in {".pt", ".pth"})
        theirs, ours = source.config.without_loss(), model.config.without_loss()
        if theirs != ours:
            differ = {k: theirs[k] for k in ours if theirs.get(k) != ours[k]}
            raise ValueError(
                f"model.init {m.init} has a different config than {m.preset} with these overrides; "
                f"its values (pass them as model.overrides): {differ}"
            )
        load_state_dict_checked(model, source.state_dict())
    return model


def train_init_recipe(config: FitConfig, cancel: threading.Event | None = None) -> FitConfig:
    """``config`` with ``model.init`` set to the ``best/`` of its ``model.init_recipe``'s run, that
    recipe trained first (and its own ``init_recipe`` before it) while its run has no ``best/``;
    ``config`` itself without an ``init_recipe``. A run folder trained with another config than
    the recipe's is refused rather than silently built on."""
    m = config.model
    if m.init_recipe is None:
        return config
    stage = load_config(m.init_recipe)
    run_dir = Path(stage.output.dir)
    best = run_dir / "best"
    if m.init is not None and Path(m.init) != best:
        raise ValueError(f"model.init {m.init} and model.init_recipe {m.init_recipe} (-> {best}) disagree: keep one")
    if (best / "config.json").is_file():
        # read back through load_config, so fields added since that run take their defaults
        trained = load_config(run_dir / "config.yaml").to_dict() if (run_dir / "config.yaml").is_file() else None
        if trained != train_init_recipe(stage).to_dict():
            raise ValueError(
                f"{run_dir} was trained with another config than {m.init_recipe}: remove that run folder "
                "(or point the recipe's output.dir elsewhere) to train it anew"
            )
    else:
        print(f"first the stage before this one: {m.init_recipe} -> {run_dir}", flush=True)
        result = run(stage, cancel=cancel)
        if result.cancelled:
            raise KeyboardInterrupt(f"{m.init_recipe} cancelled; resume it with python -m train.fit --resume {run_dir}")
    return dataclasses.replace(config, model=dataclasses.replace(m, init=str(best)))


def run(
    config: FitConfig,
    resume: str | Path | None = None,
    cancel: threading.Event | None = None,
    allow_batch_change: bool = False,
) -> TrainResult:
    """Everything ``python -m train.fit`` does, callable from Python (the config already resolved)."""
    config = train_init_recipe(config, cancel)  # a staged recipe: its first stage, if not trained yet
    info = distributed.init_from_env(config.train.device)
    out = Path(config.output.dir)
    try:
        # --- model and tokenizer: the same seed on every rank, so all start from one init -----
        seed_everything(config.train.seed)
        model = build_model_from(config)
        tokenizer = load_tokenizer(model.config.text_model)

        # --- data: train and val (model selection; the test split is for train.evaluate) -------
        d = config.data
        train_set = make_dataset(
            d.kind, d.root, d.train_split, model.config, tokenizer, d.options, d.blind_text, d.limit_train, d.mix,
            augment=d.augment, photometric=d.photometric, scale=d.scale,
        )  # fmt: skip
        val_set = None
        if d.val_split:
            val_options = {**d.options, **d.val_options}
            val_set = make_dataset(
                d.kind, d.root, d.val_split, model.config, tokenizer, val_options, d.blind_text, d.limit_val
            )

        # --- the run folder: resolved config, logs (rank 0) -------------------------------------
        logger = None
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            o = config.output
            logger = RunLogger(out, o.log_every, o.tensorboard, o.plots, o.progress_bar)
            world = info.world_size
            print(
                f"{model.config.name}: {len(train_set)} train / {len(val_set) if val_set else 0} val samples, "
                f"global batch {config.train.batch_size} x {world} process(es) x {config.train.accumulate} = "
                f"{config.train.batch_size * world * config.train.accumulate}, device {info.device}, run {out}",
                flush=True,
            )
        try:
            return train(
                model, train_set, val_set, config.train, output_dir=out, tokenizer=tokenizer, resume=resume,
                callback=logger, cancel=cancel, run_config=config.to_dict(), allow_batch_change=allow_batch_change,
            )  # fmt: skip
        finally:
            if logger is not None:
                logger.close()
    finally:
        distributed.cleanup()


def parse_args(argv: list[str] | None = None) -> tuple[FitConfig, Path | None, bool]:
    """The resolved config, the checkpoint to resume (or None) and ``--allow-batch-change``."""
    parser = argparse.ArgumentParser(
        prog="python -m train.fit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML config (sections model/data/train/output)")
    parser.add_argument("--resume", type=Path, help="a run's last.pt (or its folder): continue exactly")
    parser.add_argument(
        "--allow-batch-change",
        action="store_true",
        help="resume although the global batch (batch_size x processes x accumulate) changed: the schedule "
        "is rescaled to the samples already seen, and what changed is logged",
    )
    args, rest = parser.parse_known_args(argv)
    overrides = split_cli_overrides(rest)
    resume = args.resume
    base: dict[str, Any] | None = None
    if resume is not None:
        resume = resume / "last.pt" if resume.is_dir() else resume
        base = load_training_checkpoint(resume).get("run_config") or None
        if base is None and args.config is None:
            raise ValueError(f"{resume} holds no run config; pass the --config it was trained with")
    if args.config is None and base is None:
        raise ValueError("pass --config configs/<name>.yaml (or --resume a run's last.pt)")
    return load_config(args.config, overrides, base=base), resume, args.allow_batch_change


def main(argv: list[str] | None = None) -> int:
    try:
        config, resume, allow_batch_change = parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cancel = threading.Event()

    def stop(signum: int, frame: Any) -> None:  # first Ctrl-C: save and stop; second: abort
        print("\nstopping after this step (Ctrl-C again to abort) ...", file=sys.stderr, flush=True)
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)
    try:  # bad data or settings found while building the run: one line, no traceback
        result = run(config, resume, cancel, allow_batch_change)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        state = "cancelled; resume with --resume" if result.cancelled else "done"
        metric = config.train.select_metric
        best = f", best val {metric} {100 * result.best_metric:.2f}" if result.best_metric is not None else ""
        print(f"{state}: {result.steps} steps, {result.epochs_completed} epochs{best} -> {config.output.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
