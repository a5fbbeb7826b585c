"""Layout and wiring of the Correct and Review queue tabs (called by :func:`annotate.app.ui.build_ui`
inside its ``gr.Tabs``), and the page's save shortcut.

The Correct tab's canvas is :func:`~annotate.app.mask_canvas.mask_canvas`: its own keyboard
shortcuts (B brush, E eraser, P polygon, R region, H pan, X add/remove, [ ] size, , . opacity,
Enter / Esc / Backspace for the polygon, 0 fit, + - zoom, Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y
redo) work while the pointer is over it or it has the focus; **Ctrl+S** saves from anywhere on
the page outside a text box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from annotate.app.guards import on_page
from annotate.app.ui_adapt import adapt_panel, refresh_after

from .adapt import AdaptHandlers
from .mask_canvas import mask_canvas
from .render import BRUSH_ADD
from .review import (
    HISTORY_COLUMNS,
    NOTHING_OPEN,
    ORDERS,
    QUEUE_COLUMNS,
    STATUSES,
    UNCERTAINTY_HELP,
    ReviewHandlers,
    proposed_version,
)
from .tools import HOLE_AREA, REGION_SOURCES, SPECK_AREA, VIEW_OUTPUTS, ToolHandlers

ANNOTATOR_KEY = "sbanet-annotator"  # the browser's local-storage key of the annotator's name
SHORTCUTS = (
    "**B** brush · **E** eraser · **P** polygon · **R** region · **H** pan (or Space + drag) · "
    "**X** add/remove · **[ ]** size · **, .** opacity · wheel zoom · **0** fit · **Ctrl+Z** undo · "
    "**Ctrl+Shift+Z** redo · **Ctrl+S** save"
)
CANVAS_HELP = (
    "**One canvas for every tool.** *Brush* paints the mask, *Eraser* wipes it; *Polygon* puts a vertex "
    "per click and fills it on a click on the first (circled) vertex, *Close* or Enter; *Region* takes the "
    "region around a click, snapped to the image's edges at the *Region* size below (small for a roof, "
    "large for a lake or the sand) or taken from the model's own map (the first such click runs the "
    "model). *Add* / *Remove* (X) choose what polygon and region do. The opacity slider only changes how "
    "the mask is drawn. *Undo* / *Redo* cover every edit, the region and fill tools' included."
)


@dataclass(frozen=True)
class CorrectTab:
    """The Correct tab's components other tabs wire to."""

    recent: gr.Dropdown
    mask_version: gr.Number
    note: gr.Textbox

    def recent_choices(self, session: Any) -> tuple[dict[str, Any], Any]:
        """The list after a segmentation: one entry per saved expression, first selected."""
        saved = [] if session is None else [(p, v) for p, v in zip(session.predictions, session.mask_version_ids) if v]
        if not saved:
            return gr.update(choices=[], value=None), None
        choices = [(f"{p.expression} · version {v}", v) for p, v in saved]
        proposal = proposed_version(session)  # what Open opens when the box reads empty
        return gr.update(choices=choices, value=proposal), proposal


def legend() -> str:
    """The mask's colour on the canvas, and the shortcuts."""
    swatch = "<span class='sbanet-swatch' style='background:{}'></span>{}"
    return swatch.format(BRUSH_ADD, "the mask") + f"<br><span class='sbanet-note'>{SHORTCUTS}</span>"


def review_tabs(
    rev: ReviewHandlers,
    annotator_box: gr.Textbox,
    session: gr.State,
    tabs: gr.Tabs,
    demo: gr.Blocks,
    adapt: AdaptHandlers | None = None,
) -> CorrectTab:
    """Add the Correct and Review queue tabs and wire them (named API endpoints included); with
    ``adapt``, the Correct tab's "Adapt to my corrections" panel too."""

    private = {"api_visibility": "private"}
    with gr.Tab("Correct", id="correct"):
        editing = gr.State(None)  # inside the tab: gr.Tabs must hold only gr.Tab children
        with gr.Row(equal_height=True):
            recent = gr.Dropdown(label="From your last segmentation", choices=[], scale=2)
            # no precision: a rounded 1.5 would name another mask; version_id refuses it
            mask_version = gr.Number(label="Mask version", value=None, elem_id="mask-version")
            open_button = gr.Button("Open in editor", elem_id="open-button")
        item_info = gr.Markdown(NOTHING_OPEN, elem_id="item-info")
        gr.Markdown(legend(), elem_id="editor-legend")
        editor = mask_canvas(height=620, mask_colour=BRUSH_ADD, elem_id="mask-editor")
        tools_state = gr.State(None)
        with gr.Group(elem_id="mask-tools"):
            gr.Markdown(CANVAS_HELP, elem_classes="sbanet-note")
            with gr.Row(equal_height=True):
                region_source = gr.Radio(
                    list(REGION_SOURCES), value=next(iter(REGION_SOURCES)), label="Region", elem_id="region-source"
                )
                hole_area = gr.Number(value=HOLE_AREA, label="Holes up to (px; empty: all)", elem_id="hole-area")
                fill_button = gr.Button("Fill holes", elem_id="fill-holes", min_width=100)
                speck_area = gr.Number(value=SPECK_AREA, label="Specks below (px)", elem_id="speck-area")
                specks_button = gr.Button("Remove specks", elem_id="remove-specks", min_width=100)
            tool_info = gr.Markdown(elem_id="tool-info")
        with gr.Row(equal_height=True):
            note = gr.Textbox(label="Note (optional)", scale=3)
            save_button = gr.Button("Save correction", variant="primary", elem_id="save-button")
            save_next_button = gr.Button("Save and open next", elem_id="save-next-button")
        save_info = gr.Markdown(elem_id="save-info")
        with gr.Row(equal_height=True):
            new_status = gr.Radio(
                ["accepted", "rejected", "submitted", "draft"], value="accepted", label="Review the version above"
            )
            status_button = gr.Button("Set status", elem_id="status-button")
        status_result = gr.JSON(label="Review", visible=True)
        versions = gr.Dataframe(
            headers=list(HISTORY_COLUMNS),
            label="Versions of this expression's mask (newest first)",
            interactive=False,
            elem_id="versions",
        )
        adapt_info = adapt_panel(adapt, annotator_box, editing, demo) if adapt is not None else None

    with gr.Tab("Review queue", id="review") as review_tab:
        progress = gr.Markdown(elem_id="review-progress")
        with gr.Row(equal_height=True):
            queue_status = gr.Dropdown(list(STATUSES), value="draft", label="Status")
            queue_order = gr.Radio(list(ORDERS), value="most uncertain first", label="Order")
            queue_limit = gr.Number(value=100, precision=0, minimum=1, maximum=1000, label="At most")
            queue_button = gr.Button("Refresh", elem_id="queue-button")
            next_button = gr.Button("Open the next one", variant="primary", elem_id="next-button")
        gr.Markdown(UNCERTAINTY_HELP, elem_classes="sbanet-note")
        queue = gr.Dataframe(
            headers=list(QUEUE_COLUMNS), label="Click a row to correct it", interactive=False, elem_id="queue"
        )
        # inside the tab: gr.Tabs must hold only gr.Tab children. API clients get refusals as
        # errors from these endpoints; the page's buttons warn instead
        with gr.Row(visible=False):
            api_status_button = gr.Button("api status")
            api_queue_button = gr.Button("api queue")

    # --- wiring --------------------------------------------------------------------------------
    # the page's events warn and keep every output on a refusal (on_page); the named API
    # endpoints are hidden buttons with the same inputs and outputs, whose refusals are errors
    opened = [editor, editing, item_info, versions]
    kit = ToolHandlers(rev)
    tool_outputs = [editor, tools_state, tool_info]
    # after opening: the working mask starts afresh
    fresh = {"fn": lambda e: kit.refresh(e, None), "inputs": editing, "outputs": tools_state, **private}
    # after saving: the working mask follows the saved version (kept superpixels and model map too)
    follow = {"fn": kit.refresh, "inputs": [editing, tools_state], "outputs": tools_state, **private}
    # a region click on the canvas; its handler always answers the canvas (a refusal with its own mask)
    editor.region(
        kit.region, [editing, tools_state, editor, region_source], tool_outputs, show_progress="hidden", **private
    )
    fill_button.click(
        on_page(kit.fill_holes, VIEW_OUTPUTS), [editing, tools_state, editor, hole_area], tool_outputs, **private
    )
    specks_button.click(
        on_page(kit.remove_specks, VIEW_OUTPUTS), [editing, tools_state, editor, speck_area], tool_outputs, **private
    )
    to_correct = {"fn": lambda: gr.Tabs(selected="correct"), "inputs": None, "outputs": tabs, **private}
    queue_inputs = [queue_status, queue_order, queue_limit]
    recent.input(lambda v: v, recent, mask_version, **private)
    open_button.click(on_page(rev.open_from_session, 4), [session, mask_version], opened, **private).success(**fresh)
    saved = save_button.click(
        on_page(rev.save_from_editor, 3),
        [editing, editor, note, annotator_box, tools_state],
        [save_info, editing, versions],
        **private,
    ).success(rev.header, editing, item_info, **private)
    saved.success(**follow)
    saved = saved.then(lambda e: e.mask_version_id if e else None, editing, mask_version, **private).then(
        rev.progress, None, progress, **private
    )
    # one step, so a refused save opens nothing and the editor keeps its strokes
    saved_next = (
        save_next_button.click(
            on_page(rev.save_and_next, 6),
            [editing, editor, note, annotator_box, queue_status, queue_order, tools_state],
            [save_info, editing, versions, editor, item_info, mask_version],
            **private,
        )
        .then(rev.progress, None, progress, **private)
        .then(**follow)
    )
    if adapt is not None:  # the panel's count follows every save
        for event in (saved, saved_next):
            refresh_after(event, adapt, adapt_info)
    status_inputs, status_outputs = [mask_version, new_status, note, annotator_box], [status_result, versions]
    status_button.click(on_page(rev.set_status, 2), status_inputs, status_outputs, **private).then(
        rev.progress, None, progress, **private
    )
    api_status_button.click(rev.set_status, status_inputs, status_outputs, api_name="set_status")
    queue_button.click(on_page(rev.review_queue, 1), queue_inputs, queue, **private).then(
        rev.progress, None, progress, **private
    )
    api_queue_button.click(rev.review_queue, queue_inputs, queue, api_name="review_queue")
    review_tab.select(on_page(rev.review_queue, 1), queue_inputs, queue, **private).then(
        rev.progress, None, progress, **private
    )
    demo.load(rev.progress, None, progress, **private)
    queue_status.input(on_page(rev.review_queue, 1), queue_inputs, queue, **private)
    queue_order.input(on_page(rev.review_queue, 1), queue_inputs, queue, **private)
    next_button.click(
        on_page(rev.open_next, 5), [queue_status, queue_order], [*opened, mask_version], **private
    ).success(**to_correct).success(**fresh)
    queue.select(rev.pick_from_queue, queue, mask_version, **private).success(
        on_page(rev.open_item, 4), mask_version, opened, **private
    ).success(**to_correct).success(**fresh)

    return CorrectTab(recent, mask_version, note)


def shortcuts_js() -> str:
    """The page script of the save shortcut (the canvas has its own, see the module docstring)."""
    return """
() => {
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
    const editor = document.querySelector('#mask-editor');
    if (!editor || editor.offsetParent === null) return;
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 's') {
      document.querySelector('#save-button')?.click();
      event.preventDefault();
      editor.dataset.lastShortcut = event.key;
    }
  });
}
"""
