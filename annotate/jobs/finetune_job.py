"""The human-in-the-loop fine-tune job: train a model version on the accepted masks, measure it
against its base on held-out reviewed samples, and register the result as a new model version.

::

    run_id = queue_finetune(store, base_model_id, FinetuneConfig(), author="ana")
    outcome = run_finetune(store, run_id, callback=show_progress, cancel=stop_event)

* **Data**: per expression its newest *accepted* mask version. Expressions of the ``train``
  split are trained on, those of ``eval_splits`` (``val``/``test``) are the held-out set: the
  split is stable per expression (:func:`annotate.store.repository.default_split`), so a sample is never
  trained on and evaluated on. The chosen mask versions are recorded on the run; a resumed attempt
  reuses them, so later corrections never leak into a run in flight. By default a replay of the
  base model's own training data (named by its checkpoint's recipe; or any
  :func:`sbanet.data.load_samples` dataset) is mixed in so the model does not forget; where that
  data is absent the run goes on without and records "no replay: <reason>".
* **Budget** (:func:`annotate.jobs.finetune_data.plan_run`): the steps grow with the number of
  corrections (within a floor and a cap); every ``check_every`` steps the held-out masks are
  measured and, after ``patience`` checks without a better mIoU, training stops and the best
  weights are kept. The resolved plan and how the run went are recorded on the run's config
  (``"plan"``) and in the new checkpoint's metadata (``"finetune"``).
* **Training** is :func:`sbanet.training.engine.train` (annotate never imports ``train/``): progress goes to
  ``callback`` and to the run row (throttled), the engine checks ``cancel`` and the run's
  ``cancel_requested`` flag (set from any process by :func:`annotate.store.runs.request_cancel`) before
  every step, and ``last.pt`` is written at every check into the run folder.
* **Crash recovery**: a worker killed midway leaves its run "running"; :func:`recover` (called by
  the CLI and the app at start) requeues it, and the next :func:`run_finetune` resumes from its
  ``last.pt`` (or marks it failed after :data:`annotate.store.runs.MAX_ATTEMPTS`).
* The job reads the annotators' masks and never writes one.
"""

from __future__ import annotations

import math
import threading
import traceback
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from annotate.jobs.finetune_data import (
    FinetuneConfig,
    model_dataset,
    plan_run,
    planned_replay,
    select_masks,
    store_samples,
)
from annotate.jobs.finetune_quick import quick_attempt
from annotate.jobs.finetune_record import (
    PLAN_KEY,
    ClaimedRun,
    FinetuneOutcome,
    JobProgress,
    Reporter,
    jsonable_metrics,
    register_result,
)
from annotate.store import runs
from annotate.store.database import Store
from sbanet.checkpoint import checkpoint_metadata, load_pretrained
from sbanet.training.engine import Progress, TrainConfig, train
from sbanet.training.evaluation import evaluate
from sbanet.training.train_state import load_training_checkpoint


def queue_finetune(store: Store, base_model_id: int, config: FinetuneConfig, *, author: str) -> int:
    """Create a queued run (nothing is trained yet); returns its id."""
    with store.Session.begin() as session:
        return runs.create_run(session, base_model_id, config.to_dict(), author=author).id


def recover(store: Store, *, resume: bool = True) -> list[int]:
    """Requeue (``resume``) or fail the runs whose worker died; returns their ids."""
    with store.Session.begin() as session:
        return [run.id for run in runs.recover_stale_runs(session, resume=resume)]


def run_finetune(
    store: Store,
    run_id: int,
    *,
    callback: Callable[[JobProgress], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> FinetuneOutcome:
    """Run (or resume) a queued fine-tune run to its end; see the module docstring.

    Returns how it ended; exceptions mark the run failed (with the error) and are re-raised.
    """
    with store.Session.begin() as session:
        run = runs.claim_run(session, run_id)
        claimed = ClaimedRun(
            run_id=run.id,
            config=FinetuneConfig.from_dict({k: v for k, v in run.config.items() if k != PLAN_KEY}),
            base_id=run.base_model.id,
            base_name=run.base_model.name,
            base_source=runs.checkpoint_source(store.files, run.base_model),
            preset=run.base_model.preset,
            train_ids=[m.id for m in runs.run_masks(session, run_id, "train")],
            eval_ids=[m.id for m in runs.run_masks(session, run_id, "eval")],
            metrics_before=run.metrics_before,
            plan=run.config.get(PLAN_KEY),
        )
    try:
        return _attempt(store, claimed, Reporter(store, run_id, callback, cancel))
    except Exception as exc:
        message = "".join(traceback.format_exception_only(exc)).strip()
        with store.Session.begin() as session:
            runs.finish_run(session, run_id, "failed", error=message, message=f"failed: {message}")
        raise


def _choose_masks(store: Store, claimed: ClaimedRun) -> tuple[list[int], list[int]]:
    """The first attempt chooses and records the masks; a resumed one reuses the record."""
    if claimed.train_ids or claimed.eval_ids:
        return claimed.train_ids, claimed.eval_ids
    train_ids, eval_ids = select_masks(store, claimed.config)
    if not train_ids:
        raise ValueError("no accepted masks of train-split expressions to fine-tune on: accept some corrections")
    if not eval_ids:
        raise ValueError(
            f"no accepted masks of held-out expressions (splits {list(claimed.config.eval_splits)}) to measure "
            "the fine-tune on: review some of those first"
        )
    with store.Session.begin() as session:
        runs.set_run_masks(session, claimed.run_id, train_ids, eval_ids)
    return train_ids, eval_ids


def _plan(store: Store, claimed: ClaimedRun, corrections: int) -> tuple[dict[str, Any], list[Any]]:
    """The first attempt resolves the plan (budget, replay) and records it on the run's config;
    a resumed one reads it back and draws the same replay samples."""

    if claimed.plan is not None:
        return claimed.plan, planned_replay(claimed.config, claimed.plan)
    plan, replay = plan_run(claimed.config, corrections, checkpoint_metadata(claimed.base_source))
    with store.Session.begin() as session:
        run = runs.get_run(session, claimed.run_id)
        run.config = {**run.config, PLAN_KEY: plan}
    return plan, replay


def _attempt(store: Store, claimed: ClaimedRun, reporter: Reporter) -> FinetuneOutcome:
    from torch.utils.data import ConcatDataset

    config, run_id = claimed.config, claimed.run_id
    run_dir = store.files.root / "finetune" / f"run-{run_id}"

    # --- data: accepted masks from the store (+ replay), held-out set; the budget -------------
    train_ids, eval_ids = _choose_masks(store, claimed)
    if config.mode == "quick":
        return quick_attempt(store, claimed, reporter, train_ids, eval_ids, *_plan(store, claimed, len(train_ids)))
    model, tokenizer = load_pretrained(claimed.base_source, allow_pickle=config.allow_pickle)
    plan, replay = _plan(store, claimed, len(train_ids))
    train_set = model_dataset(store_samples(store, train_ids) + replay, model.config, tokenizer)
    held_out = model_dataset(store_samples(store, eval_ids), model.config, tokenizer)
    summary = f"{len(train_ids)} accepted masks + {len(replay)} replay samples; {len(eval_ids)} held out"
    replay_note = "" if isinstance(plan["replay"], dict) else f"\n{plan['replay']}"
    reporter.report("evaluating base", 0.0, f"{summary}; {plan['budget']}{replay_note}", log_line=True)

    # --- the base model on the held-out set (measured once, kept across attempts) --------------
    metrics_before = claimed.metrics_before
    if metrics_before is None:
        metrics_before = _evaluate(model, held_out, config, reporter, "evaluating base")
        with store.Session.begin() as session:
            runs.record_metrics(session, run_id, before=metrics_before)

    # --- train with the engine: progress, cancellation, a check + last.pt every "epoch" --------
    # the engine checks and checkpoints once per epoch: one "epoch" repeats the data to last
    # about check_every steps (a few corrections make epochs of a step or two)
    batch_size = min(config.batch_size, len(train_set))
    repeats = max(1, math.ceil(plan["check_every"] * batch_size / len(train_set)))
    epoch_set = ConcatDataset([train_set] * repeats)
    shared = {f.name: getattr(config, f.name) for f in fields(TrainConfig) if hasattr(config, f.name)}
    overrides = {"epochs": 1, "batch_size": batch_size, "max_steps": plan["steps"], "select_metric": "mIoU"}
    engine_config = TrainConfig(**{**shared, **overrides})
    last = run_dir / "last.pt"
    resume = last if last.is_file() else None
    if resume is not None:
        reporter.report("training", 0.0, f"resuming from {last.name}", log_line=True)
    stopper = _EarlyStop(plan["early_stop"]["patience"] if plan["early_stop"] else None)

    def on_progress(progress: Progress) -> None:
        extra = {"step": progress.step, "total_steps": progress.total_steps, "loss": progress.loss}
        if progress.event == "epoch" and progress.metrics is not None:
            stopper.check(progress.is_best)
            best = " (best so far)" if progress.is_best else ""
            message = f"step {progress.step}: held-out mIoU {progress.metrics['mIoU']:.4f}{best}"
            reporter.report("training", progress.step / progress.total_steps, message, log_line=True, **extra)
            return
        milestone = progress.event == "step" and progress.step % max(1, progress.total_steps // 10) == 0
        message = f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f}"
        reporter.report("training", progress.step / progress.total_steps, message, log_line=milestone, **extra)

    result = train(
        model,
        epoch_set,
        held_out if plan["early_stop"] else None,
        engine_config,
        output_dir=run_dir,
        tokenizer=tokenizer,
        resume=resume,
        callback=on_progress,
        cancel=lambda: stopper.stopped or reporter.should_stop(),
        run_config={"finetune": config.to_dict(), "plan": plan, "run_id": run_id},
    )
    if result.cancelled and not stopper.stopped:
        with store.Session.begin() as session:
            runs.finish_run(session, run_id, "cancelled", message=f"cancelled at step {result.steps}")
        return FinetuneOutcome(run_id, "cancelled", metrics_before, None, None)
    outcome = {"steps_run": result.steps, "stopped_early": stopper.stopped}
    if plan["early_stop"] and (run_dir / "best.pt").is_file():  # the weights of the best held-out check
        best = load_training_checkpoint(run_dir / "best.pt")
        model.load_state_dict(best["model"])
        outcome["kept_step"] = best["step"]
    checks = [(row["step"], row["val_mIoU"]) for row in result.history if "val_mIoU" in row]
    plan = {**plan, **outcome, "checks": [{"step": step, "mIoU": round(v, 4)} for step, v in checks]}

    # --- the kept model on the same held-out set; save and register it -------------------------
    metrics_after = _evaluate(model, held_out, config, reporter, "evaluating")
    kept = f" (kept step {plan['kept_step']} of {result.steps})" if "kept_step" in plan else ""
    record = {"config": config.to_dict(), "plan": plan}
    return register_result(
        store, claimed, reporter, model, tokenizer, record, (metrics_before, metrics_after), kept, "finetune"
    )


class _EarlyStop:
    """Stop after ``patience`` held-out checks in a row without a new best (None: never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.since_best, self.stopped = patience, 0, False

    def check(self, is_best: bool) -> None:
        self.since_best = 0 if is_best else self.since_best + 1
        self.stopped = self.patience is not None and self.since_best >= self.patience


def _evaluate(model: Any, dataset: Any, config: FinetuneConfig, reporter: Reporter, stage: str) -> dict[str, Any]:

    def progress(done: int, total: int) -> None:
        reporter.report(stage, done / max(total, 1), f"{stage}: {done}/{total}")

    reporter.report(stage, 0.0, f"{stage} on {len(dataset)} held-out samples", log_line=True)
    metrics = evaluate(model, dataset, batch_size=config.eval_batch_size, precision=config.precision, progress=progress)
    return jsonable_metrics(metrics)
