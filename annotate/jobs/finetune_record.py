"""What a fine-tune run records and reports, shared by both modes (:mod:`annotate.jobs.finetune_job`
runs the full mode, :mod:`annotate.jobs.finetune_quick` the quick one): progress for the app and
the run row (:class:`JobProgress`, :class:`Reporter`, which also answers whether to stop), what a
claimed run carries (:class:`ClaimedRun`), the outcome (:class:`FinetuneOutcome`), and saving and
registering the new model version (:func:`register_result`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotate.jobs.finetune_data import FinetuneConfig
from annotate.store import runs
from annotate.store.database import Store
from sbanet.checkpoint import save_pretrained

PLAN_KEY = "plan"  # the resolved plan's key in the run row's config
PERSIST_EVERY_S = 2.0  # progress rows written at most this often (and at every stage change)
CANCEL_POLL_S = 1.0  # how often the run's cancel flag is read from the database
# overall progress of each stage: (start, end)
STAGES = {"evaluating base": (0.0, 0.1), "training": (0.1, 0.9), "evaluating": (0.9, 0.98), "saving": (0.98, 1.0)}


@dataclass(frozen=True)
class JobProgress:
    """What the app shows: overall ``fraction`` (0..1) and the current stage's details."""

    run_id: int
    stage: str
    fraction: float
    message: str
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None


@dataclass(frozen=True)
class FinetuneOutcome:
    run_id: int
    status: str  # succeeded | cancelled | failed
    metrics_before: dict[str, Any] | None
    metrics_after: dict[str, Any] | None
    model_version_id: int | None


class Reporter:
    """Turns engine progress into :class:`JobProgress` for the app and throttled run-row updates,
    and answers the engine's cancel question from the in-process event and the run row."""

    def __init__(self, store: Store, run_id: int, callback: Callable[[JobProgress], None] | None, cancel: Any) -> None:
        self.store, self.run_id, self.callback, self.cancel = store, run_id, callback, cancel
        self.stage, self.persisted_at, self.polled_at, self.cancelled = "", 0.0, 0.0, False
        self.stages = STAGES

    def report(self, stage: str, within: float, message: str, log_line: bool = False, **extra: Any) -> None:
        start, end = self.stages.get(stage, (within, within))
        fraction = start + (end - start) * min(max(within, 0.0), 1.0)
        if self.callback is not None:
            self.callback(JobProgress(self.run_id, stage, fraction, message, **extra))
        now = time.monotonic()
        if stage != self.stage or log_line or now - self.persisted_at >= PERSIST_EVERY_S:
            with self.store.Session.begin() as session:
                logged = message if (stage != self.stage or log_line) else None
                runs.record_progress(session, self.run_id, fraction, stage, logged)
            self.stage, self.persisted_at = stage, now

    def should_stop(self) -> bool:
        if self.cancelled:
            return True
        event = self.cancel
        if event is not None and (event.is_set() if isinstance(event, threading.Event) else event()):
            self.cancelled = True
        elif time.monotonic() - self.polled_at >= CANCEL_POLL_S:
            self.polled_at = time.monotonic()
            with self.store.ReadSession() as session:
                self.cancelled = runs.cancel_requested(session, self.run_id)
        return self.cancelled


def jsonable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's summary as plain JSON values (per-sample IoUs left out)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    return plain({k: v for k, v in metrics.items() if k != "per_sample"})


def save_model(model: Any, tokenizer: Any, directory: Path, metadata: dict[str, Any]) -> Path:
    """``save_pretrained`` into a temporary folder renamed into place: a registered model version
    never points at a half-written checkpoint."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp, tokenizer=tokenizer, metadata=metadata)
    if directory.exists():  # left by an attempt that died before registering it: unreferenced
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


@dataclass(frozen=True)
class ClaimedRun:
    """What a claimed run carries into its attempt (read in the claiming transaction)."""

    run_id: int
    config: FinetuneConfig
    base_id: int
    base_name: str
    base_source: str
    preset: str
    train_ids: list[int]
    eval_ids: list[int]
    metrics_before: dict[str, Any] | None
    plan: dict[str, Any] | None  # resolved by the first attempt (plan_run), reused by a resumed one


def register_result(
    store: Store,
    claimed: ClaimedRun,
    reporter: Reporter,
    model: Any,
    tokenizer: Any,
    record: dict[str, Any],
    metrics: tuple[dict[str, Any], dict[str, Any]],
    kept: str,
    label: str,
) -> FinetuneOutcome:
    """Save a finished run's model, register it as a version (``"<base> + <label> <run>"``),
    activate it only when its held-out mIoU beats the base's, and close the run (both modes).

    ``record``: the checkpoint's ``metadata.finetune`` (its ``"plan"`` also goes to the run row);
    ``metrics``: held-out metrics (before, after); ``kept``: which step's weights were kept, said.
    """
    metrics_before, metrics_after = metrics
    run_id = claimed.run_id
    reporter.report("saving", 0.0, "saving the new model", log_line=True)
    metadata = {"finetune_run": run_id, "parent": claimed.base_source, "finetune": record, **metrics_after}
    directory = save_model(model, tokenizer, store.files.models / f"finetune-run-{run_id}", metadata)
    with store.Session.begin() as session:
        new = runs.add_model_version(
            session,
            name=f"{claimed.base_name} + {label} {run_id}",
            checkpoint=runs.stored_checkpoint(store.files, directory),
            preset=claimed.preset,
            parent_id=claimed.base_id,
            metrics=metrics_after,
        )
        if claimed.config.activate and metrics_after["mIoU"] > metrics_before["mIoU"]:
            runs.activate_model(session, new.id)
        run = runs.get_run(session, run_id)
        run.config = {**run.config, PLAN_KEY: record["plan"]}
        change = f"held-out mIoU {metrics_before['mIoU']:.4f} -> {metrics_after['mIoU']:.4f}{kept}"
        runs.finish_run(
            session, run_id, "succeeded", metrics_after=metrics_after, result_model_id=new.id, message=change
        )
    shutil.rmtree(store.files.root / "finetune" / f"run-{run_id}", ignore_errors=True)  # resume state
    if reporter.callback is not None:
        reporter.callback(JobProgress(run_id, "done", 1.0, f"registered model version {new.id}; {change}"))
    return FinetuneOutcome(run_id, "succeeded", metrics_before, metrics_after, new.id)
