"""Layout and wiring of "Adapt to my corrections" (a panel of the Correct tab, placed by
:func:`annotate.app.ui_review.review_tabs`): the button, a progress bar while the quick run works
(with Cancel), the image being corrected before and after side by side, and "Go back"."""

from __future__ import annotations

from typing import Any

import gradio as gr

from annotate.app.guards import on_page

from .adapt import AdaptHandlers

POLL_SECONDS = 1.0


def adapt_panel(adapt: AdaptHandlers, annotator_box: gr.Textbox, editing: gr.State, demo: gr.Blocks) -> gr.Markdown:
    """Add the panel where it is called (inside a tab) and wire it; returns its summary line, which
    the caller refreshes after every save."""
    private = {"api_visibility": "private"}
    with gr.Group(elem_id="adapt-panel"):
        gr.Markdown(
            "### Adapt the model to your corrections\nA quick run (about a minute) fits the active model to "
            "the corrections you saved, measures it on held-out masks and makes it active only if it is "
            "better there. The picture below shows the image you are correcting before and after.",
        )
        info = gr.Markdown(elem_id="adapt-info")
        with gr.Row(equal_height=True):
            adapt_button = gr.Button("Adapt to my corrections", variant="primary", elem_id="adapt-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="adapt-cancel")
            back_button = gr.Button("Go back to the previous version", elem_id="adapt-back")
            run = gr.Number(label="Adaptation run", interactive=False, elem_id="adapt-run")
        progress = gr.Markdown(elem_id="adapt-progress")
        with gr.Row(equal_height=True):
            before = gr.Image(label="before", interactive=False, format="png", height=320, elem_id="adapt-before")
            after = gr.Image(label="after", interactive=False, format="png", height=320, elem_id="adapt-after")
        back_info = gr.Markdown(elem_id="adapt-back-info")
        timer = gr.Timer(POLL_SECONDS, active=False)

    demo.load(adapt.info, None, info, **private)
    adapt_button.click(on_page(adapt.start, 3), annotator_box, [run, progress, timer], api_name="adapt_to_corrections")
    timer.tick(adapt.poll, [run, editing], [progress, before, after, info, timer], **private)
    cancel_button.click(on_page(adapt.cancel, 1), run, progress, api_name="cancel_adaptation")
    back_button.click(on_page(adapt.go_back, 1), None, back_info, api_name="go_back_to_previous_model").then(
        adapt.info, None, info, **private
    )
    return info


def refresh_after(event: Any, adapt: AdaptHandlers, info: gr.Markdown) -> Any:
    """Chain the summary's refresh after ``event`` (a save)."""
    return event.then(adapt.info, None, info, api_visibility="private")
