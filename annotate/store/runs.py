"""Repository functions for model versions and fine-tune runs (the caller owns the transaction).

A run moves ``queued -> running -> succeeded | failed | cancelled``; a queued run can be
cancelled directly, and a running run whose worker died (killed, machine rebooted) is found by
:func:`recover_stale_runs` and put back in the queue to resume, or marked failed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .files import FileStore
from .models import RUN_STATUSES, FineTuneRun, MaskVersion, ModelVersion, finetune_run_mask, utcnow
from .repository import check_author, check_choice, get_row

FINISHED = ("succeeded", "failed", "cancelled")
STALE_AFTER = timedelta(minutes=5)  # heartbeats come every few seconds; 5 min of silence is death
MAX_ATTEMPTS = 3


# --- model versions ---------------------------------------------------------------------------
def add_model_version(
    session: Session,
    *,
    name: str,
    checkpoint: str,
    preset: str,
    parent_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    active: bool = False,
) -> ModelVersion:
    """Register a checkpoint (a directory, file or hub id loadable by :mod:`sbanet.checkpoint`)."""
    if not name or not checkpoint or not preset:
        raise ValueError("a model version needs a name, a checkpoint location and a preset")
    if parent_id is not None:
        get_row(session, ModelVersion, parent_id, "parent model version")
    model = ModelVersion(
        name=name, checkpoint=str(checkpoint), preset=preset, parent_id=parent_id, metrics=metrics, active=None
    )
    session.add(model)
    session.flush()
    if active:
        activate_model(session, model.id)
    return model


def stored_checkpoint(files: FileStore, path: str | Path) -> str:
    """How a checkpoint is recorded: relative to the data folder when inside it (the folder can
    move), else as given (an absolute path elsewhere, or a hub id)."""
    candidate = Path(path)
    try:
        return candidate.resolve().relative_to(files.root.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def checkpoint_source(files: FileStore, model: ModelVersion) -> str:
    """The checkpoint to load for a model version (data-folder-relative paths resolved)."""
    inside = files.root / model.checkpoint
    return str(inside) if not Path(model.checkpoint).is_absolute() and inside.exists() else model.checkpoint


def get_model_version(session: Session, model_version_id: int) -> ModelVersion:
    return get_row(session, ModelVersion, model_version_id, "model version")


def list_model_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def active_model(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()


def activate_model(session: Session, model_version_id: int) -> ModelVersion:
    """Make one model version the one the app predicts with (the others are deactivated)."""
    model = get_model_version(session, model_version_id)
    session.execute(update(ModelVersion).where(ModelVersion.id != model.id).values(active=None))
    session.flush()
    model.active = True
    session.flush()
    return model


# --- fine-tune runs ---------------------------------------------------------------------------
def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def create_run(session: Session, base_model_id: int, config: dict[str, Any], *, author: str) -> FineTuneRun:
    """Queue a fine-tune run of ``base_model_id`` with a resolved config (JSON-serialisable)."""
    get_model_version(session, base_model_id)
    run = FineTuneRun(base_model_id=base_model_id, status="queued", author=check_author(author), config=config)
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: int, *, lock: bool = False) -> FineTuneRun:
    """A run, re-read from the database (``lock``: ``SELECT ... FOR UPDATE`` where supported)."""
    query = select(FineTuneRun).where(FineTuneRun.id == int(run_id)).execution_options(populate_existing=True)
    run = session.scalars(query.with_for_update() if lock else query).first()
    if run is None:
        raise ValueError(f"unknown fine-tune run id {run_id}")
    return run


def list_runs(session: Session, status: str | None = None) -> list[FineTuneRun]:
    query = select(FineTuneRun).order_by(FineTuneRun.id.desc())
    if status is not None:
        query = query.where(FineTuneRun.status == check_choice(status, RUN_STATUSES, "status"))
    return list(session.scalars(query))


def claim_run(session: Session, run_id: int, worker: str | None = None) -> FineTuneRun:
    """queued -> running, owned by ``worker`` (default this process)."""
    run = get_run(session, run_id, lock=True)
    if run.status != "queued":
        raise ValueError(f"fine-tune run {run.id} is {run.status}, only a queued run can start")
    now = utcnow()
    run.status, run.stage, run.worker = "running", "starting", worker or worker_name()
    run.started_at = run.started_at or now
    run.heartbeat_at = now
    run.attempts += 1
    append_log(run, f"attempt {run.attempts} started by {run.worker}")
    session.flush()
    return run


def append_log(run: FineTuneRun, line: str) -> None:
    run.log = (run.log or "") + f"[{utcnow():%Y-%m-%d %H:%M:%S}] {line}\n"


def record_progress(
    session: Session, run_id: int, progress: float, stage: str, message: str | None = None
) -> FineTuneRun:
    """Persist progress (0..1) and the current stage; doubles as the worker's heartbeat."""
    run = get_run(session, run_id)
    if run.status != "running":
        raise ValueError(f"fine-tune run {run.id} is {run.status}, not running")
    run.progress = float(min(max(progress, 0.0), 1.0))
    run.stage = stage[:64]
    run.heartbeat_at = utcnow()
    if message:
        append_log(run, message)
    session.flush()
    return run


def record_metrics(session: Session, run_id: int, *, before: dict[str, Any]) -> FineTuneRun:
    """Keep the base model's held-out metrics as soon as they are measured (a resumed attempt reuses them)."""
    run = get_run(session, run_id)
    run.metrics_before = before
    session.flush()
    return run


def set_run_masks(session: Session, run_id: int, train: Iterable[int], evaluate: Iterable[int]) -> None:
    """Record the mask versions a run trained on and evaluated on (replaces an earlier attempt's)."""
    run = get_run(session, run_id)
    session.execute(finetune_run_mask.delete().where(finetune_run_mask.c.run_id == run.id))
    rows = [{"run_id": run.id, "mask_version_id": int(m), "role": "train"} for m in train]
    rows += [{"run_id": run.id, "mask_version_id": int(m), "role": "eval"} for m in evaluate]
    if rows:
        session.execute(finetune_run_mask.insert(), rows)
    session.flush()


def run_masks(session: Session, run_id: int, role: str) -> list[MaskVersion]:
    query = (
        select(MaskVersion)
        .join(finetune_run_mask, finetune_run_mask.c.mask_version_id == MaskVersion.id)
        .where(finetune_run_mask.c.run_id == run_id, finetune_run_mask.c.role == role)
        .order_by(MaskVersion.id)
    )
    return list(session.scalars(query))


def request_cancel(session: Session, run_id: int) -> FineTuneRun:
    """Ask a run to stop: a queued run is cancelled now, a running one at its next step."""
    run = get_run(session, run_id, lock=True)
    if run.status == "queued":
        return finish_run(session, run.id, "cancelled", message="cancelled before it started")
    if run.status == "running":
        run.cancel_requested = True
        append_log(run, "cancellation requested")
        session.flush()
    return run


def cancel_requested(session: Session, run_id: int) -> bool:
    return bool(session.scalar(select(FineTuneRun.cancel_requested).where(FineTuneRun.id == run_id)))


def finish_run(
    session: Session,
    run_id: int,
    status: str,
    *,
    metrics_before: dict[str, Any] | None = None,
    metrics_after: dict[str, Any] | None = None,
    result_model_id: int | None = None,
    error: str | None = None,
    message: str | None = None,
) -> FineTuneRun:
    """End a run as succeeded / failed / cancelled with what it measured and produced."""
    check_choice(status, FINISHED, "final status")
    run = get_run(session, run_id, lock=True)
    if run.status in FINISHED:
        raise ValueError(f"fine-tune run {run.id} already finished ({run.status})")
    if result_model_id is not None:
        get_model_version(session, result_model_id)
    run.status, run.stage, run.finished_at = status, status, utcnow()
    if status == "succeeded":
        run.progress = 1.0
    if metrics_before is not None:
        run.metrics_before = metrics_before
    if metrics_after is not None:
        run.metrics_after = metrics_after
    run.result_model_id = result_model_id
    run.error = error
    append_log(run, message or (f"{status}: {error}" if error else status))
    session.flush()
    return run


def _worker_is_dead(run: FineTuneRun, now: datetime, stale_after: timedelta) -> bool:
    host, _, pid = (run.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)  # signal 0: does the process exist?
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return run.heartbeat_at is None or now - run.heartbeat_at > stale_after


def recover_stale_runs(
    session: Session, *, resume: bool = True, stale_after: timedelta = STALE_AFTER, max_attempts: int = MAX_ATTEMPTS
) -> list[FineTuneRun]:
    """Find "running" runs whose worker is gone (a dead pid on this host, or no heartbeat for
    ``stale_after``) and requeue them (``resume``, up to ``max_attempts``) or mark them failed."""
    now = utcnow()
    recovered = []
    for run in session.scalars(select(FineTuneRun).where(FineTuneRun.status == "running").with_for_update()):
        if not _worker_is_dead(run, now, stale_after):
            continue
        if resume and run.attempts < max_attempts and not run.cancel_requested:
            run.status, run.stage, run.worker = "queued", "requeued", None
            append_log(run, f"worker gone during attempt {run.attempts}; requeued to resume")
        elif run.cancel_requested:
            finish_run(session, run.id, "cancelled", message="worker gone after cancellation was requested")
        else:
            finish_run(session, run.id, "failed", error=f"worker gone during attempt {run.attempts}")
        recovered.append(run)
    session.flush()
    return recovered
