"""The training and evaluation loop, called by ``train/fit.py`` and by the app's fine-tune job.

:func:`train` is a library function with no global state of its own: the caller builds the model
and the datasets, passes a :class:`TrainConfig`, and may pass a progress ``callback`` (called on
rank 0 after every optimiser step and every epoch) and a ``cancel`` event or callable (checked
before every optimiser step; a cancelled run saves ``last.pt`` and can be resumed exactly).

Distributed runs (``torchrun``): the caller joins the process group
(:func:`sbanet.training.distributed.init_from_env`); :func:`train` then wraps the model in DDP, shards each
epoch with a ``DistributedSampler``, evaluates on disjoint shards and merges the metric states,
and writes checkpoints on rank 0 only. The global batch is
``batch_size x world_size x accumulate`` (the paper: 12 = 12 x 1 x 1; e.g. 4 GPUs x 3).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from sbanet.inference.precision import autocast, training_precision

from ..checkpoint import load_state_dict_checked, save_pretrained
from . import distributed
from .evaluation import evaluate, forward_batch, to_device
from .optim import OPTIMIZER_SCOPES, build_optimizer, build_scheduler
from .precise_bn import recalibrate_batchnorm as recalibrate_batchnorm  # re-exported for callers
from .precise_bn import recalibrate_on
from .train_state import (
    capture_rng,
    load_training_checkpoint,
    restore_rng,
    resume_position,
    save_training_checkpoint,
    seed_everything,
)

logger = logging.getLogger(__name__)

SELECT_METRICS = ("oIoU", "mIoU")


@dataclass
class TrainConfig:
    """The optimisation recipe; the defaults are the paper's (which follows LAVT)."""

    epochs: int = 40
    batch_size: int = 12  # per process and micro-batch
    accumulate: int = 1  # micro-batches per optimiser step
    lr: float = 5e-4
    weight_decay: float = 0.01  # AdamW, not on norms/biases/position tables (sbanet.training.optim)
    encoder_lr_mult: float = 1.0  # lr multiplier for the (pretrained) visual and text encoders
    optimizer_scope: str = "paper"  # "lavt": LAVT train.py's decay rule and BERT layers 0-9 only (optim.py)
    poly_power: float = 0.9
    warmup_steps: int = 0
    max_steps: int | None = None  # the schedule's length in optimiser steps (else epochs x epoch)
    grad_clip: float | None = None  # max global gradient L2 norm
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (fp16 with a GradScaler); sbanet.inference.precision
    freeze_text_encoder: bool = False  # no gradients, dropout off
    freeze_batchnorm: bool = False  # BatchNorm keeps its running statistics (fine-tuning on small batches)
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto": this rank's GPU if any, else the CPU
    eval_batch_size: int | None = None  # default: batch_size
    eval_every: int = 1  # validate every N epochs (and after the last)
    recalibrate_bn: int = 0  # training batches to recompute BatchNorm statistics on before validation/the end
    select_metric: str = "oIoU"  # the val metric that picks best.pt

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "accumulate", "eval_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.precision = training_precision(self.precision)
        if self.optimizer_scope not in OPTIMIZER_SCOPES:
            raise ValueError(f"optimizer_scope must be one of {OPTIMIZER_SCOPES}, got {self.optimizer_scope!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.recalibrate_bn < 0:
            raise ValueError("warmup_steps, num_workers and recalibrate_bn must be >= 0")


@dataclass(frozen=True)
class Progress:
    """What the callback receives. ``event``: ``"step"`` after each optimiser step, ``"epoch"``
    after each epoch (with ``metrics`` when it was validated), ``"end"`` once at the end."""

    event: str
    step: int
    total_steps: int
    epoch: int  # 0-based epoch in progress (for "epoch": the one just finished); the CSV logs add 1
    epochs: int
    loss: float  # the step's loss averaged over ranks; for "epoch"/"end": the mean of the epoch's step losses
    lr: float  # the lr the (last) optimiser step used, of the non-encoder parameter groups
    samples_per_s: float
    eta_s: float
    grad_norm: float | None = None
    metrics: dict[str, Any] | None = None
    is_best: bool = False
    memory_gb: float | None = None  # peak CUDA memory allocated so far (None on CPU)


@dataclass
class TrainResult:
    """Where a run ended: optimiser steps, completed epochs, whether it was cancelled, the best
    val ``select_metric`` (None without validation) and one history row per epoch."""

    steps: int
    epochs_completed: int
    cancelled: bool
    best_metric: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path | None = None


class StepTimer:
    """Mean duration of the last ``window`` optimiser steps, leaving out a run's first step
    (allocator and kernel warm-up) once there are others: the basis of samples/s and the ETA."""

    def __init__(self, window: int = 50) -> None:
        self.first: float | None = None
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> float:
        if self.first is None:
            self.first = seconds
        else:
            self.recent.append(seconds)
        return self.mean()

    def mean(self) -> float:
        if self.recent:
            return sum(self.recent) / len(self.recent)
        return self.first or 0.0


def set_train_mode(model: nn.Module, freeze_text_encoder: bool, freeze_batchnorm: bool = False) -> None:
    """Train mode, except a frozen text encoder stays in eval mode (no dropout) and, with
    ``freeze_batchnorm``, BatchNorm layers normalise with (and keep) their running statistics."""
    model.train()
    if freeze_text_encoder:
        model.text_encoder.eval()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _cancel_requested(cancel: threading.Event | Callable[[], bool] | None, info: distributed.DistInfo) -> bool:
    flag = bool(cancel.is_set() if isinstance(cancel, threading.Event) else cancel()) if cancel else False
    if info.distributed:  # every rank must stop at the same step, or the others hang
        flag = distributed.all_reduce_mean([float(flag)], info.device)[0] > 0
    return flag


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    tokenizer: Any | None = None,
    resume: str | Path | None = None,
    callback: Callable[[Progress], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    run_config: dict[str, Any] | None = None,
    allow_batch_change: bool = False,
) -> TrainResult:
    """Train ``model`` (an :class:`~sbanet.modeling.sbanet.SBANet`, modified in place) on
    ``train_set`` items ``{"image" [3,S,S], "mask" [S,S], "input_ids" [L], "attention_mask" [L],
    "index"}``; validate on ``val_set`` (never the test split) and keep the best by
    ``config.select_metric``.

    With ``output_dir``: ``last.pt`` every epoch and on cancellation, ``best.pt`` and the exported
    ``best/`` (safetensors, for ``Predictor.from_pretrained``) on every new best. ``resume``: a
    ``last.pt`` to continue from exactly; a checkpoint written with another global batch
    (``batch_size x processes x accumulate``) is refused unless ``allow_batch_change``, which
    rescales the schedule (:func:`sbanet.training.train_state.resume_position`) and logs what changed.
    ``run_config`` (e.g. the CLI's resolved YAML) is stored
    in the checkpoints next to ``config`` and ``train_config``.
    """
    config = config or TrainConfig()
    info = distributed.current(config.device)
    output_dir = Path(output_dir) if output_dir is not None else None
    log = callback if (callback is not None and info.is_main) else (lambda progress: None)

    # --- model, frozen parts, optimiser -------------------------------------------------------
    model.to(info.device)
    if config.freeze_text_encoder:
        model.text_encoder.requires_grad_(False)
    optimizer = build_optimizer(
        model, config.lr, config.weight_decay, config.encoder_lr_mult, scope=config.optimizer_scope
    )
    # the lr reported is config.lr's (not the encoders' multiplied one)
    head = next((i for i, g in enumerate(optimizer.param_groups) if not g["name"].startswith("encoder_")), 0)
    scaler = torch.amp.GradScaler(info.device.type, enabled=config.precision == "fp16")
    net: nn.Module = model
    if info.distributed:
        net = DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None)

    # --- data: every rank draws the same seeded permutation and keeps its share ---------------
    sampler = distributed.ResumableDistributedSampler(
        train_set, info.world_size, info.rank, shuffle=True, seed=config.seed, drop_last=False
    )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.num_workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed),  # the global RNG stays the model's
    )
    steps_per_epoch = len(loader) // config.accumulate
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(train_set)} training samples make no optimiser step of batch {config.batch_size} x "
            f"{info.world_size} processes x {config.accumulate} accumulation; lower batch_size or accumulate"
        )
    samples_per_step = config.batch_size * config.accumulate * info.world_size  # the global batch
    state = load_training_checkpoint(resume) if resume is not None else None
    max_steps, batch_changes = config.max_steps, []
    if state is not None:  # a changed global batch is refused, or rescaled when allowed
        position = resume_position(state, samples_per_step, steps_per_epoch, max_steps, allow_batch_change)
        max_steps, batch_changes = position.max_steps, list(state.get("batch_changes", []))
        if position.note is not None:
            batch_changes.append({"step": position.step, "global_batch": samples_per_step, "note": position.note})
            if info.is_main:
                logger.warning("resuming %s: %s", resume, position.note)
    if max_steps != config.max_steps:  # checkpoints hold the rescaled length, so later resumes agree
        config = replace(config, max_steps=max_steps)
        if run_config and isinstance(run_config.get("train"), dict):
            run_config = {**run_config, "train": {**run_config["train"], "max_steps": max_steps}}
    total_steps = max_steps or config.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = build_scheduler(optimizer, total_steps, config.poly_power, config.warmup_steps)

    # --- resume: weights, optimiser, schedule, position and every RNG, or a fresh seed --------
    step = epoch = epoch_step = 0
    best: float | None = None
    history: list[dict[str, Any]] = []
    if state is not None:
        load_state_dict_checked(model, state["model"])  # names what does not match, if anything
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, epoch_step = position.step, position.epoch, position.epoch_step
        # the schedule's length follows this config (a resumed run may be given more epochs)
        scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        scheduler.last_epoch = step
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
        scaler.load_state_dict(state.get("scaler", {}) or scaler.state_dict())
        best, history = state.get("best_metric"), list(state.get("history", []))
        rng = state["rng"]
        restore_rng(rng[info.rank] if info.rank < len(rng) else rng[0])
    else:
        seed_everything(config.seed + info.rank)

    def checkpoint(path: Path, **extra: Any) -> None:
        # collective (every rank's RNG state is gathered), written by rank 0
        state = {
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "epoch_step": epoch_step,
            "rng": distributed.gather_objects(capture_rng()),
            "train_config": asdict(config),
            "run_config": run_config or {},
            "best_metric": best,
            "history": history,
            "world_size": info.world_size,
            "batch_changes": batch_changes,
            **extra,
        }
        if info.is_main:
            save_training_checkpoint(path, state)

    cancelled = False
    lr = optimizer.param_groups[head]["lr"]
    timer = StepTimer()
    while step < total_steps:
        # --- one epoch: shuffle with (seed, epoch), skip what a resumed run has already seen ---
        sampler.set_epoch(epoch)
        sampler.set_start(epoch_step * config.accumulate * config.batch_size)
        set_train_mode(model, config.freeze_text_encoder, config.freeze_batchnorm)
        epoch_losses: list[float] = []
        batches = iter(loader)
        while epoch_step < steps_per_epoch and step < total_steps:
            if _cancel_requested(cancel, info):
                cancelled = True
                break
            # --- forward/backward over the micro-batches; DDP syncs gradients on the last ----
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in range(config.accumulate):
                batch = to_device(next(batches), info.device)
                sync = micro == config.accumulate - 1 or not info.distributed
                with net.no_sync() if not sync else nullcontext(), autocast(info.device, config.precision):
                    loss = model.loss(forward_batch(net, batch), batch["mask"]) / config.accumulate
                    scaler.scale(loss).backward()
                loss_sum += loss.item()
            loss_sum = distributed.all_reduce_mean([loss_sum], info.device)[0]  # every rank's share counts
            # --- clip, step, schedule ----------------------------------------------------------
            grad_norm = None
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[head]["lr"]
            with warnings.catch_warnings():  # a step GradScaler skipped still counts in the schedule
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                scheduler.step()
            step, epoch_step = step + 1, epoch_step + 1
            epoch_losses.append(loss_sum)
            # --- report --------------------------------------------------------------------
            step_time = timer.add(time.perf_counter() - started)
            memory = torch.cuda.max_memory_allocated(info.device) / 2**30 if info.device.type == "cuda" else None
            speed, eta = samples_per_step / step_time, step_time * (total_steps - step)
            log(
                Progress(
                    "step", step, total_steps, epoch, epochs, loss_sum, lr, speed, eta, grad_norm, memory_gb=memory
                )
            )
        del batches
        if cancelled:
            if output_dir is not None:
                checkpoint(output_dir / "last.pt")
            distributed.barrier()
            break

        # --- end of epoch: mean of the step losses (each already averaged over ranks), validation
        train_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else math.nan
        finished_epoch, epoch, epoch_step = epoch, epoch + 1, 0
        metrics, is_best = None, False
        validate = val_set is not None and (epoch % config.eval_every == 0 or step >= total_steps)
        if config.recalibrate_bn and (validate or step >= total_steps):
            seed = config.seed + 1000 + finished_epoch
            recalibrate_on(model, train_set, config.recalibrate_bn, config.batch_size, seed, config.precision)
        if validate:
            eval_size = config.eval_batch_size or config.batch_size
            metrics = evaluate(
                model, val_set, batch_size=eval_size, precision=config.precision, num_workers=config.num_workers
            )
            metrics.pop("per_sample")
            score = float(metrics[config.select_metric])
            is_best = best is None or score > best  # strictly: of tied epochs the earliest stays best
            best = score if is_best else best
        history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "lr": lr, **_flat_summary(metrics)})
        if output_dir is not None:
            checkpoint(output_dir / "last.pt")
            if is_best:
                checkpoint(output_dir / "best.pt", val_metrics=metrics)
                if info.is_main:
                    meta = {"epoch": epoch, "step": step, "selected_on": f"val {config.select_metric}"}
                    save_pretrained(model, output_dir / "best", tokenizer=tokenizer, metadata={**meta, **metrics})
            distributed.barrier()
        step_time = timer.mean() or math.inf
        eta = 0.0 if math.isinf(step_time) else step_time * (total_steps - step)
        log(Progress("epoch", step, total_steps, finished_epoch, epochs, train_loss, lr,
                     samples_per_step / step_time, eta, None, metrics, is_best))  # fmt: skip

    last_loss = history[-1]["train_loss"] if history else math.nan
    log(Progress("end", step, total_steps, epoch, epochs, last_loss, lr, 0.0, 0.0, None, None, False))
    return TrainResult(step, epoch, cancelled, best, history, output_dir)


def _flat_summary(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The scalar validation metrics as ``val_<name>`` columns (per-category values left out)."""
    return {f"val_{k}": float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
