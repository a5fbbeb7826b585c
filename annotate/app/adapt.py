"""Handlers of "Adapt to my corrections" (the Correct tab): a quick fine-tune run of the active
model on the saved corrections (:mod:`annotate.jobs.finetune_quick`), its progress, the image
being corrected segmented before and after side by side, and one click back.

The run measures the adapted version on the held-out masks and it becomes the active model only
when it beats its base there; either way it is kept as a model version of this store (the
Fine-tune tab lists it), and "Go back" makes the active version's parent active again.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from annotate.app.guards import annotator, user_errors

from ..jobs.finetune_data import FinetuneConfig
from ..jobs.finetune_quick import DEFAULT_ADAPT_AFTER
from ..store.text import markdown_text
from .inputs import load_image
from .manage import comparison, progress_markdown, whole_number
from .render import fit_within, overlay_mask, palette_colour

PREVIEW_SIDE = 480  # the before / after pictures' longer side
STATUSES = ("accepted", "submitted")  # a user's saved corrections count before anyone reviews them


def adapt_config() -> FinetuneConfig:
    """What "Adapt to my corrections" runs: the quick mode on accepted and submitted masks."""
    return FinetuneConfig(mode="quick", statuses=STATUSES, activate=False)


class AdaptHandlers:
    """Start, watch, show and undo a quick adaptation (one shared backend; no per-user state)."""

    def __init__(self, backend: Any, adapt_after: int = DEFAULT_ADAPT_AFTER) -> None:
        if adapt_after < 1:
            raise ValueError(f"adapt_after must be >= 1, got {adapt_after}")
        self.backend = backend
        self.adapt_after = adapt_after

    def info(self) -> str:
        """How many corrections a run would learn from and be measured on, and whether to adapt."""
        train, held_out = self.backend.finetune_masks(adapt_config())
        active = self.backend.active_version()
        model = markdown_text(active["name"]) if active else "no model"
        counts = f"**{len(train)}** corrections to learn from, **{len(held_out)}** held out to measure on"
        if len(train) < self.adapt_after:
            return f"{counts}. Save {self.adapt_after - len(train)} more to adapt **{model}** to them."
        if not held_out:
            return f"{counts}: correct a mask of a held-out expression (val split) so the result can be measured."
        return f"{counts}. Ready: **Adapt to my corrections** fits **{model}** to them in about a minute."

    @user_errors
    def start(self, annotator_name: str, request: gr.Request = None) -> tuple[int, str, Any]:
        """Start a quick run of the active model; returns the run id, its progress, the timer."""
        author = annotator(request, annotator_name, required=True)
        active = self.backend.active_version()
        if active is None:
            raise ValueError("no model is active in this store: load one first")
        train, held_out = self.backend.finetune_masks(adapt_config())
        if len(train) < self.adapt_after:
            raise ValueError(f"{len(train)} corrections saved: adapting needs at least {self.adapt_after}")
        if not held_out:
            raise ValueError("no held-out masks to measure the adapted model on: correct one of a val expression")
        run_id = self.backend.jobs.start(active["id"], adapt_config(), author)
        return run_id, progress_markdown(self.backend.jobs.status(run_id)), gr.Timer(active=True)

    def poll(self, run: Any, editing: Any) -> tuple[Any, ...]:
        """The timer's tick: progress while running; once done, activate the new version if it is
        better, and show the image being corrected before and after. Stops the timer then."""
        if not run:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.Timer(active=False)
        status = self.backend.jobs.status(whole_number(run, "run"))
        if not status["finished"]:
            return progress_markdown(status), gr.update(), gr.update(), gr.update(), gr.Timer(active=True)
        message = progress_markdown(status)
        if status["status"] != "succeeded":
            return message, gr.update(), gr.update(), self.info(), gr.Timer(active=False)
        base, new = status["base_model"], status["result_model"]
        before, after = status["metrics_before"]["mIoU"], status["metrics_after"]["mIoU"]
        if after > before:
            name = self.backend.activate_version(new)
            message = message.replace("; make it active below if you want everyone to use it", "")
            message += f"  \n**{markdown_text(name)}** is now the active model (use *Go back* to undo)."
        else:
            message += f"  \n{comparison(status)}"
        pictures = self.before_after(editing, base, new)
        return message, *pictures, self.info(), gr.Timer(active=False)

    def before_after(self, editing: Any, base: int, new: int) -> tuple[Any, Any]:
        """The image open in the editor segmented by ``base`` and by ``new`` (labelled pictures);
        nothing when no image is open."""
        if editing is None:
            return gr.update(), gr.update()
        item = self.backend.item(editing.mask_version_id)
        image = fit_within(load_image(item.image_path, editing.bands, name=item.image_name).rgb, PREVIEW_SIDE)
        shown = []
        for version, label in ((base, "before"), (new, "after")):
            prediction = self.backend.version_predictor(version).predict(image, item.expression)
            mask = np.asarray(prediction.mask, dtype=bool)
            picture = overlay_mask(image, mask, palette_colour(0))
            shown.append(gr.update(value=picture, label=f"{label}: model version {version} ({mask.mean():.1%} of it)"))
        return shown[0], shown[1]

    @user_errors
    def cancel(self, run: Any) -> str:
        run_id = whole_number(run, "run")
        self.backend.jobs.cancel(run_id)
        return progress_markdown(self.backend.jobs.status(run_id))

    @user_errors
    def go_back(self) -> str:
        """Make the active version's parent (the version it was adapted from) active again."""
        active = self.backend.active_version()
        if active is None or active["parent"] is None:
            raise ValueError("the active model has no previous version to go back to")
        name = self.backend.activate_version(active["parent"])
        return f"Back to **{markdown_text(name)}** (model version {active['parent']}): every user segments with it."
