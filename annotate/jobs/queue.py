"""Background fine-tune runs for the app: start one, watch it, cancel it.

The job itself is :func:`annotate.jobs.finetune_job.run_finetune` (the store branch's): this module only
runs it in a daemon thread, keeps the latest :class:`~annotate.jobs.finetune_job.JobProgress` it reported,
and reads the run row for everything else, so progress, logs and metrics survive a page reload
and are the same for every user. One run at a time: the app shares the CPU with inference.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from annotate.jobs.finetune_job import FinetuneConfig, queue_finetune, recover, run_finetune
from annotate.jobs.finetune_record import JobProgress

from ..store import runs
from ..store.database import Store

FINISHED = ("succeeded", "failed", "cancelled")
LOG = logging.getLogger(__name__)


@dataclass
class _Job:
    thread: threading.Thread
    cancel: threading.Event
    progress: JobProgress | None = None


class FinetuneJobs:
    """The app's fine-tune runs (one instance shared by all users, guarded by a lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}

    def recover(self) -> list[int]:
        """At start-up: runs whose worker died are requeued, and the first is resumed in the
        background from its last checkpoint (any others wait, queued, for the next start)."""
        requeued = recover(self.store)
        if requeued:
            with self._lock:
                self._launch(requeued[0])
        return requeued

    def running(self) -> int | None:
        with self._lock:
            return next((run_id for run_id, job in self._jobs.items() if job.thread.is_alive()), None)

    def start(self, base_model_id: int, config: FinetuneConfig, author: str) -> int:
        """Queue a run of ``base_model_id`` and start it in the background; returns the run id."""
        with self._lock:
            busy = next((run_id for run_id, job in self._jobs.items() if job.thread.is_alive()), None)
            if busy is not None:
                raise ValueError(f"fine-tune run {busy} is still running: wait for it or cancel it first")
            run_id = queue_finetune(self.store, base_model_id, config, author=author)
            self._launch(run_id)
        return run_id

    def _launch(self, run_id: int) -> None:
        """Run ``run_id`` in a daemon thread (the caller holds the lock)."""
        job = _Job(threading.Thread(target=self._work, args=(run_id,), daemon=True), threading.Event())
        self._jobs[run_id] = job
        job.thread.start()

    def _work(self, run_id: int) -> None:
        job = self._jobs[run_id]

        def report(progress: JobProgress) -> None:
            job.progress = progress

        try:
            run_finetune(self.store, run_id, callback=report, cancel=job.cancel)
        except Exception:  # run_finetune recorded the error on the run row, which users see
            LOG.exception("fine-tune run %s failed", run_id)

    def cancel(self, run_id: int) -> str:
        """Ask a run to stop (at its next step); returns its status now."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            job.cancel.set()
        with self.store.Session.begin() as session:
            return runs.request_cancel(session, run_id).status

    def status(self, run_id: int) -> dict[str, Any]:
        """What a user sees of a run: state, progress, the current step's loss, log and metrics."""
        with self.store.ReadSession() as session:
            run = runs.get_run(session, run_id)
            info = {
                "run": run.id,
                "status": run.status,
                "stage": run.stage,
                "progress": round(run.progress, 4),
                "base_model": run.base_model_id,
                "result_model": run.result_model_id,
                "metrics_before": run.metrics_before,
                "metrics_after": run.metrics_after,
                "error": run.error,
                "log": run.log,
                "trained_on": len(runs.run_masks(session, run_id, "train")),
                "held_out": len(runs.run_masks(session, run_id, "eval")),
                "plan": run.config.get("plan"),  # budget, replay, early stopping (once resolved)
            }
        with self._lock:
            job = self._jobs.get(run_id)
        progress = job.progress if job is not None else None
        if progress is not None and info["status"] == "running":  # fresher than the throttled row
            info.update(
                stage=progress.stage,
                progress=round(progress.fraction, 4),
                message=progress.message,
                step=progress.step,
                total_steps=progress.total_steps,
                loss=progress.loss,
            )
        info["finished"] = info["status"] in FINISHED
        return info

    def wait(self, run_id: int, timeout: float | None = None) -> None:
        """Block until the run's thread ends (for tests and the command line)."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            job.thread.join(timeout)
