"""Layout and wiring of the Correct and Review queue tabs (called by :func:`annotate.app.ui.build_ui`
inside its ``gr.Tabs``), and the editor's keyboard shortcuts.

Shortcuts (while the pointer is not in a text box): **B** brush, **E** eraser, **H** pan,
**[** / **]** brush or eraser size, **Ctrl+Z** undo, **Ctrl+Shift+Z** / **Ctrl+Y** redo,
**Ctrl+S** save; the mouse wheel over the canvas zooms. They press the editor's own buttons and
slider, so they do exactly what a click does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from annotate.app.guards import on_page
from annotate.app.ui_adapt import adapt_panel, refresh_after

from .adapt import AdaptHandlers
from .render import BRUSH_ADD, BRUSH_OPACITY, BRUSH_REMOVE, MASK_OPACITY, editor_background
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
from .tools import CLICK_TOOLS, HOLE_AREA, REGION_SOURCES, SPECK_AREA, VIEW_OUTPUTS, ToolHandlers

ANNOTATOR_KEY = "sbanet-annotator"  # the browser's local-storage key of the annotator's name
SHORTCUTS = (
    "**B** brush · **E** eraser · **H** pan (drag) · **[ ]** size · mouse wheel zoom · **Ctrl+Z** undo · "
    "**Ctrl+Shift+Z** redo · **Ctrl+S** save"
)


TOOLS_HELP = (
    "**Mask tools** act on the mask shown above, strokes included. Pick a tool, then click the picture "
    "below: *Add region* / *Remove region* take the region around the click, snapped to the image's "
    "edges at the *Region* size chosen (small for a roof, large for a lake or the sand) or taken from "
    "the model's own map (the piece it almost found; the first such click runs the model); *Polygon* "
    "puts a vertex per click and applies on a click on the first (circled) vertex or *Close polygon*. "
    "*Undo tool* takes back the last vertex or tool edit."
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


def _brush() -> gr.Brush:
    """Two fixed colours: the first adds to the mask, the second removes from it."""
    add, remove = (BRUSH_ADD, BRUSH_OPACITY), (BRUSH_REMOVE, BRUSH_OPACITY)
    return gr.Brush(colors=[add, remove], default_color=add, color_mode="fixed", default_size=12)


def legend() -> str:
    """Labelled swatches: the colours as they look on the canvas (the mask tinted into the image,
    the brushes at their opacity over it), and the shortcuts."""
    import numpy as np

    grey = np.full((1, 1, 3), 128, np.uint8)
    tint = editor_background(grey, np.ones((1, 1), bool))[0, 0]
    mask = "#{:02x}{:02x}{:02x}".format(*(int(v) for v in tint))
    swatch = "<span class='sbanet-swatch' style='background:{}; opacity:{}'></span>{}"
    return (
        swatch.format(mask, 1, "current mask")
        + swatch.format(BRUSH_ADD, BRUSH_OPACITY, "add brush (pink)")
        + swatch.format(BRUSH_REMOVE, BRUSH_OPACITY, "remove brush (blue, palette button)")
        + f"<br><span class='sbanet-note'>{SHORTCUTS}</span>"
    )


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
        editor = gr.ImageEditor(
            label="Pink brush adds, blue brush removes (palette), eraser wipes strokes",
            type="numpy",
            image_mode="RGBA",
            format="png",
            sources=[],
            transforms=[],
            layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
            brush=_brush(),
            eraser=gr.Eraser(default_size=12),
            height=620,
            elem_id="mask-editor",
        )
        tools_state = gr.State(None)
        with gr.Group(elem_id="mask-tools"):
            gr.Markdown(TOOLS_HELP, elem_classes="sbanet-note")
            with gr.Row(equal_height=True):
                click_tool = gr.Radio(list(CLICK_TOOLS), value=CLICK_TOOLS[0], label="Click tool", elem_id="click-tool")
                region_source = gr.Radio(
                    list(REGION_SOURCES), value=next(iter(REGION_SOURCES)), label="Region", elem_id="region-source"
                )
                opacity = gr.Slider(0.05, 1.0, value=MASK_OPACITY, step=0.05, label="Mask opacity", elem_id="opacity")
            with gr.Row(equal_height=True):
                close_button = gr.Button("Close polygon", elem_id="close-polygon", min_width=100)
                undo_button = gr.Button("Undo tool", elem_id="undo-tool", min_width=100)
                hole_area = gr.Number(value=HOLE_AREA, label="Holes up to (px; empty: all)", elem_id="hole-area")
                fill_button = gr.Button("Fill holes", elem_id="fill-holes", min_width=100)
                speck_area = gr.Number(value=SPECK_AREA, label="Specks below (px)", elem_id="speck-area")
                specks_button = gr.Button("Remove specks", elem_id="remove-specks", min_width=100)
            tool_info = gr.Markdown(elem_id="tool-info")
            tool_view = gr.Image(
                label="Click here with the tool chosen above",
                type="numpy",
                format="png",
                interactive=False,
                height=620,
                elem_id="tool-view",
            )
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
    tool_outputs = [editor, tool_view, tools_state, tool_info]
    # after opening: the working mask starts afresh (and the opacity at its default, as the editor shows it)
    fresh = {
        "fn": lambda e: (*kit.refresh(e, None), MASK_OPACITY),
        "inputs": editing,
        "outputs": [tool_view, tools_state, opacity],
        **private,
    }
    # after saving: the working mask follows the saved version (undo history kept)
    follow = {"fn": kit.refresh, "inputs": [editing, tools_state], "outputs": [tool_view, tools_state], **private}
    tool_view.select(
        on_page(kit.click, VIEW_OUTPUTS),
        [editing, tools_state, editor, click_tool, region_source],
        tool_outputs,
        **private,
    )
    close_button.click(
        on_page(kit.close_polygon, VIEW_OUTPUTS), [editing, tools_state, editor, click_tool], tool_outputs, **private
    )
    undo_button.click(on_page(kit.undo, VIEW_OUTPUTS), [editing, tools_state, editor], tool_outputs, **private)
    fill_button.click(
        on_page(kit.fill_holes, VIEW_OUTPUTS), [editing, tools_state, editor, hole_area], tool_outputs, **private
    )
    specks_button.click(
        on_page(kit.remove_specks, VIEW_OUTPUTS), [editing, tools_state, editor, speck_area], tool_outputs, **private
    )
    opacity.release(
        on_page(kit.set_opacity, VIEW_OUTPUTS), [editing, tools_state, editor, opacity], tool_outputs, **private
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
    """The page script of the editor's keyboard shortcuts (see the module docstring)."""
    return """
() => {
  const editor = () => document.querySelector('#mask-editor');
  const visible = (el) => !!el && el.offsetParent !== null;
  const press = (label) => {
    const button = editor()?.querySelector(`button[aria-label="${label}"]`);
    if (button && !button.disabled) { button.click(); return true; }
    return false;
  };
  const resize = (step) => {
    const apply = (slider) => {
      const size = +slider.value + 2 * step * (+slider.step || 1);
      slider.value = String(Math.max(+slider.min || 1, Math.min(+slider.max || 100, size)));
      slider.dispatchEvent(new Event('input', { bubbles: true }));
      slider.dispatchEvent(new Event('change', { bubbles: true }));
      editor().dataset.brushSize = slider.value;
    };
    const slider = editor()?.querySelector('input[type=range]');
    if (slider) { apply(slider); return true; }
    // the size slider lives in the tool's options: open them, then change it once drawn
    if (!(press('Brush Size') || press('Eraser Size'))) return false;
    setTimeout(() => { const opened = editor()?.querySelector('input[type=range]'); if (opened) apply(opened); }, 60);
    return true;
  };
  const zoomOnWheel = (event) => {  // the wheel zooms the canvas (the editor's zoom buttons)
    if (!event.target.closest || !event.target.closest('#mask-editor canvas')) return;
    event.preventDefault();
    press(event.deltaY < 0 ? 'Zoom in' : 'Zoom out');
  };
  document.addEventListener('wheel', zoomOnWheel, { passive: false, capture: true });
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
    if (!visible(editor())) return;
    const key = event.key.toLowerCase();
    const ctrl = event.ctrlKey || event.metaKey;
    let done = false;
    if (ctrl && key === 'z') done = press(event.shiftKey ? 'Redo' : 'Undo');
    else if (ctrl && key === 'y') done = press('Redo');
    else if (ctrl && key === 's') { document.querySelector('#save-button')?.click(); done = true; }
    else if (!ctrl && !event.altKey && key === 'b') done = press('Brush') || press('Draw');
    else if (!ctrl && !event.altKey && key === 'e') done = press('Erase') || press('Eraser');
    else if (!ctrl && !event.altKey && key === 'h') done = press('Pan');
    else if (!ctrl && (event.key === '[' || event.key === ']')) done = resize(event.key === ']' ? 1 : -1);
    if (done) { event.preventDefault(); editor().dataset.lastShortcut = event.key; }
  });
}
"""
