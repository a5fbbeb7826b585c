"""Handlers of the Fine-tune and Export tabs: model versions, background fine-tune runs, dataset
exports, georeferenced mask files and the Hub backup."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from annotate.app.guards import annotator, user_errors

from ..jobs.finetune_data import FinetuneConfig
from ..store.export import FORMATS
from ..store.text import markdown_text
from .review import HISTORY_COLUMNS, table, version_id

MODEL_COLUMNS = ("model_version", "name", "preset", "parent", "active", "mIoU", "oIoU", "created")
METRICS = ("count", "mIoU", "oIoU", "Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9")
SELECTIONS = {"accepted masks": "accepted", "newest mask of every expression": "latest"}
BAR_CELLS = 24
MIN_TRAIN_MASKS = 20  # below: warn that a fine-tune will most likely make the model worse
MIN_HELD_OUT_MASKS = 10  # below: warn that the before/after comparison says little
NOT_BETTER_BELOW = 0.005  # a held-out mIoU gain smaller than this is reported as "not better"


def whole_number(value: Any, what: str, low: int = 1, high: int = 1_000_000) -> int:
    """An integer in ``[low, high]`` from a number box (``ValueError`` naming ``what`` otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def progress_markdown(status: dict[str, Any]) -> str:
    """A run's state as one readable block: a text progress bar, the stage, step and loss."""
    filled = round(BAR_CELLS * status["progress"])
    bar = "█" * filled + "░" * (BAR_CELLS - filled)
    lines = [
        f"**Run {status['run']}: {status['status']}** · {status['stage']}",
        f"`{bar}` {100 * status['progress']:.0f} %",
    ]
    if status.get("step") is not None:
        loss = "" if status.get("loss") is None else f" · loss {status['loss']:.4f}"
        lines.append(f"step {status['step']} / {status['total_steps']}{loss}")
    if status["trained_on"] or status["held_out"]:
        lines.append(f"{status['trained_on']} accepted masks trained on, {status['held_out']} held out")
    plan = status.get("plan") or {}
    if plan:
        lines.append(plan_summary(plan))
    if status["status"] == "succeeded":
        lines.append(f"New model version **{status['result_model']}**. {comparison(status)}")
    if status["error"]:
        lines.append(f"Error: {markdown_text(status['error'])}")
    return "  \n".join(lines)


def plan_summary(plan: dict[str, Any]) -> str:
    """What a run chose (budget, replay, early stopping) and, once trained, which step it kept."""
    replay = plan["replay"]
    if isinstance(replay, dict):
        replay = f"{replay['samples']} replay samples of the base's training data"
    else:  # "no replay: <reason>" may quote paths
        replay = markdown_text(replay)
    parts = [f"Budget: {plan['budget']}", replay]
    if "kept_step" in plan:
        stopped = "stopped early" if plan.get("stopped_early") else "ran all steps"
        parts.append(f"{stopped} at step {plan['steps_run']}, kept the weights of step {plan['kept_step']}")
    return " · ".join(parts)


def comparison(status: dict[str, Any]) -> str:
    """Plain words on the held-out mIoU of a finished run: better, not better or not measured."""
    before, after = (status.get("metrics_before") or {}).get("mIoU"), (status.get("metrics_after") or {}).get("mIoU")
    if before is None or after is None:
        return "It was not measured on held-out masks: check it on your own images before making it active."
    numbers = f"(held-out mIoU {after:.3f} vs the base's {before:.3f}, on {status['held_out']} of your masks)"
    if after < before:
        return f"It is **worse than its base** {numbers}: keep the base active."
    if after - before < NOT_BETTER_BELOW:
        return f"It is **not better than its base** {numbers}: keep the base active, or correct more masks first."
    return f"It is better than its base {numbers}; make it active below if you want everyone to use it."


def sample_warning(trained_on: int, held_out: int) -> str:
    """A warning when a run would have too few masks to learn from or to be judged on ("" if not)."""
    problems = []
    if trained_on < MIN_TRAIN_MASKS:
        problems.append(
            f"only {trained_on} accepted masks to train on (fewer than {MIN_TRAIN_MASKS} usually makes the "
            "model worse: accept more corrections first)"
        )
    if held_out < MIN_HELD_OUT_MASKS:
        problems.append(
            f"only {held_out} held-out masks to measure on (with fewer than {MIN_HELD_OUT_MASKS} the "
            "comparison says little)"
        )
    return "⚠ " + "; ".join(problems) + "." if problems else ""


def metrics_table(status: dict[str, Any]) -> pd.DataFrame:
    """Held-out metrics of the base model and the fine-tuned one, side by side (3 decimals)."""
    before, after = status.get("metrics_before") or {}, status.get("metrics_after") or {}

    def shown(value: Any) -> Any:
        return round(float(value), 3) if isinstance(value, int | float) else value

    rows = [
        [name, shown(before.get(name)), shown(after.get(name))] for name in METRICS if name in before or name in after
    ]
    frame = pd.DataFrame(rows, columns=["metric", "base model", "fine-tuned"], dtype=object)
    return frame.fillna("")


class ManageHandlers:
    """Fine-tune (models, runs) and Export (datasets, mask files, Hub backup)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    # --- models -----------------------------------------------------------------------------
    def model_table(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The model versions table and the choices of the model pickers (active one selected)."""
        rows = self.backend.model_versions()
        choices = [
            (f"{r['name']} (version {r['model_version']}){' · active' if r['active'] else ''}", r["model_version"])
            for r in rows
        ]
        active = next((r["model_version"] for r in rows if r["active"]), None)
        return table(rows, MODEL_COLUMNS), gr.update(choices=choices, value=active)

    def versions(self) -> pd.DataFrame:
        """API: the model versions table (the ``active`` column marks the one in use)."""
        return self.model_table()[0]

    @user_errors
    def activate(self, model_version: Any) -> tuple[str, pd.DataFrame]:
        """Make a model version the one every user segments with."""
        name = self.backend.activate_version(version_id(model_version, "model version"))
        return f"Every user now segments with **{markdown_text(name)}**.", self.model_table()[0]

    # --- fine-tune ----------------------------------------------------------------------------
    @staticmethod
    def _config(steps: Any, batch_size: Any, lr: Any, include_imported: bool, activate: bool) -> FinetuneConfig:
        try:
            rate = float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"learning rate must be a number, got {lr!r}") from None
        return FinetuneConfig(  # no steps: the budget follows the number of corrections
            steps=None if steps in (None, "") else whole_number(steps, "steps", 1, 100_000),
            batch_size=whole_number(batch_size, "batch size", 1, 64),
            lr=rate,
            include_imported=bool(include_imported),
            activate=bool(activate),
        )

    @user_errors
    def finetune_data(self, include_imported: bool) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        """What a run would use: the newest accepted mask of each expression, train vs held out."""
        config = FinetuneConfig(include_imported=bool(include_imported))
        train, held_out = self.backend.finetune_masks(config)
        summary = (
            f"A run trains on **{len(train)}** accepted masks (train split) and measures base and new model "
            f"on **{len(held_out)}** held-out ones (val/test split, never trained on)."
        )
        warning = sample_warning(len(train), len(held_out))
        summary = f"{summary}\n\n{warning}" if warning else summary
        return summary, table(train, HISTORY_COLUMNS), table(held_out, HISTORY_COLUMNS)

    @user_errors
    def start(
        self,
        base_model: Any,
        steps: Any,
        batch_size: Any,
        lr: Any,
        include_imported: bool,
        activate: bool,
        annotator_name: str,
        request: gr.Request = None,
    ) -> tuple[int, dict[str, Any]]:
        """Start a background fine-tune run of ``base_model``; returns the run id and its status."""
        author = annotator(request, annotator_name, required=True)
        config = self._config(steps, batch_size, lr, include_imported, activate)
        train, held_out = self.backend.finetune_masks(config)
        warning = sample_warning(len(train), len(held_out))
        if warning:
            gr.Warning(warning, title="Few masks")
        run_id = self.backend.jobs.start(version_id(base_model, "model version"), config, author)
        return run_id, self.backend.jobs.status(run_id)

    @user_errors
    def status(self, run: Any) -> tuple[dict[str, Any], str, str, pd.DataFrame]:
        """A run's status (JSON for the API), its progress, log and before/after metrics."""
        status = self.backend.jobs.status(whole_number(run, "run"))
        return status, progress_markdown(status), status["log"], metrics_table(status)

    def poll(self, run: Any) -> tuple[Any, ...]:
        """The timer's tick: refresh a run's view, and stop ticking once it has finished."""
        if not run:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.Timer(active=False)
        status, markdown, log, metrics = self.status(run)
        return status, markdown, log, metrics, gr.Timer(active=not status["finished"])

    @user_errors
    def cancel(self, run: Any) -> dict[str, Any]:
        run_id = whole_number(run, "run")
        self.backend.jobs.cancel(run_id)
        return self.backend.jobs.status(run_id)

    # --- export -------------------------------------------------------------------------------
    @user_errors
    def export(self, fmt: str, selection: str) -> tuple[str, str]:
        """The store's masks as a zip in one of the store's export formats."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
        path, summary = self.backend.export(fmt, SELECTIONS[selection])
        skipped = f", {summary.skipped} skipped (not georeferenced)" if summary.skipped else ""
        return path, f"Exported **{summary.exported}** expressions as `{fmt}`{skipped}."

    @user_errors
    def export_mask(self, mask_version: Any) -> list[str]:
        """One mask version as PNG, and as GeoTIFF + GeoPackage + GeoJSON for georeferenced images."""
        return self.backend.mask_files(version_id(mask_version))

    @user_errors
    def backup(self, repo_id: str) -> str:
        result = self.backend.backup_to_hub(repo_id)
        files = ", ".join(f"{count} {name}" for name, count in result["files"].items())
        return f"Backed up to **{result['repo']}** ({files}): {result['commit']}"  # a validated Hub id and URL
