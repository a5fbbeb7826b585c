"""The Gradio app's layout and wiring (hysts' Spaces style: no logic here, handlers do it).

Every action has a named API endpoint (see ``docs/api.md``); model work goes through the queue
under one concurrency group whose limit is ``concurrency_limit``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .handlers import SegmentHandlers, on_page
from .inputs import IMAGE_SUFFIXES, MAX_EXPRESSIONS
from .render import BRUSH_ADD, BRUSH_OPACITY, BRUSH_REMOVE
from .review import ORDERS, STATUSES, ReviewHandlers
from .ui_manage import manage_tabs

TITLE = "SBANet · referring segmentation for aerial images"
INTRO = (
    "Upload an aerial image, describe what to segment (one expression per line), inspect what the "
    "model looked at, correct the mask with a brush and save it. Every button is also an API "
    "endpoint (see *Use via API* at the bottom)."
)
CSS = """
#segment-summary table { font-size: 0.9em; }
.sbanet-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
"""
MODEL_GROUP = "model"  # one concurrency group for everything that runs the network


def _brush() -> gr.Brush:
    """Two fixed colours: the first adds to the mask, the second removes from it."""
    add, remove = (BRUSH_ADD, BRUSH_OPACITY), (BRUSH_REMOVE, BRUSH_OPACITY)
    return gr.Brush(colors=[add, remove], default_color=add, color_mode="fixed", default_size=12)


def build_ui(backend: Any, *, examples: list[list[str]] | None = None, concurrency_limit: int = 1) -> gr.Blocks:
    """The whole app over ``backend`` (the real :class:`~annotate.backend.Backend` or a fake)."""
    seg = SegmentHandlers(backend)
    rev = ReviewHandlers(backend)
    model_events = {"concurrency_limit": concurrency_limit, "concurrency_id": MODEL_GROUP}
    # Gradio's own cache (uploads, returned files) is swept hourly of files older than a day
    with gr.Blocks(title="SBANet", delete_cache=(3600, 86400)) as demo:
        session = gr.State(None)
        editing = gr.State(None)
        with gr.Row(equal_height=True):
            gr.Markdown(f"## {TITLE}\n{INTRO}")
            with gr.Column(scale=0, min_width=260):
                annotator_box = gr.Textbox(label="Annotator", placeholder="your name", elem_id="annotator")
                model_info = gr.Markdown(elem_classes="sbanet-note")

        with gr.Tabs(selected="segment") as tabs:
            # --- Segment ---------------------------------------------------------------------
            with gr.Tab("Segment", id="segment"), gr.Row():
                with gr.Column(scale=2, min_width=320):
                    upload = gr.File(
                        label="Image (PNG, JPEG, TIFF / GeoTIFF: any bands and bit depth)",
                        file_types=list(IMAGE_SUFFIXES),
                        type="filepath",
                        elem_id="upload",
                    )
                    preview = gr.Image(label="As the model sees it", interactive=False, height=260, format="png")
                    image_info = gr.Markdown(elem_classes="sbanet-note")
                    expressions = gr.Textbox(
                        label=f"Expressions (one per line, up to {MAX_EXPRESSIONS})",
                        placeholder="the water\nall buildings\nthe road on the left",
                        lines=3,
                        max_lines=MAX_EXPRESSIONS,
                        elem_id="expressions",
                    )
                    with gr.Accordion("Options", open=False):
                        bands = gr.Textbox(
                            label="Bands shown as R,G,B (counted from 1; blank: 1,2,3)", placeholder="e.g. 4,3,2"
                        )
                        threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold")
                    segment_button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                    if examples:
                        gr.Examples(
                            examples=examples,
                            inputs=[upload, expressions],
                            label="Examples (generated synthetic scenes)",
                            example_labels=[" · ".join(text.splitlines()) for _, text in examples],
                        )
                with gr.Column(scale=3):
                    overlay = gr.AnnotatedImage(label="Masks", elem_id="overlay", height=520, format="png")
                    summary = gr.Markdown(elem_id="segment-summary")
                    probabilities = gr.Gallery(label="Probability maps", columns=4, height=220, format="png")
                    mask_files = gr.File(label="Masks at full resolution (PNG 0/255)", file_count="multiple")
                    with gr.Accordion("Details (JSON)", open=False):
                        details = gr.JSON(label="Details")

            # --- Attention -------------------------------------------------------------------
            with gr.Tab("Attention", id="attention"):
                gr.Markdown(
                    "What SBANet looked at for one expression: the learnable query tokens per stage, each "
                    "word's weight in the query-text alignment, where the pixels attend to one word, and "
                    "the text-conditioned spatial aggregator. Colour scales are per panel; bars show %.",
                    elem_classes="sbanet-note",
                )
                with gr.Row():
                    attention_expression = gr.Dropdown(label="Expression", choices=[], elem_id="attention-expression")
                    attention_word = gr.Dropdown(label="Word (pixel-word map)", choices=[], elem_id="attention-word")
                query_map = gr.Image(
                    label="Query tokens per stage", interactive=False, format="png", elem_id="query-map"
                )
                word_bars = gr.Image(label="Word weights", interactive=False, format="png", elem_id="word-bars")
                pixel_word_map = gr.Image(label="Pixel-word attention", interactive=False, format="png")
                tcsa_map = gr.Image(label="TCSA spatial attention", interactive=False, format="png")

            # --- Correct ---------------------------------------------------------------------
            with gr.Tab("Correct", id="correct"):
                with gr.Row(equal_height=True):
                    recent = gr.Dropdown(label="From your last segmentation", choices=[], scale=2)
                    # no precision: a rounded 1.5 would name another mask; version_id refuses it
                    mask_version = gr.Number(label="Mask version", elem_id="mask-version")
                    open_button = gr.Button("Open in editor", elem_id="open-button")
                item_info = gr.Markdown(elem_id="item-info")
                editor = gr.ImageEditor(
                    label="Pink brush adds, blue brush removes (palette), eraser wipes strokes, ↶ undoes",
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
                with gr.Row(equal_height=True):
                    note = gr.Textbox(label="Note (optional)", scale=3)
                    save_button = gr.Button("Save correction", variant="primary", elem_id="save-button")
                save_info = gr.Markdown(elem_id="save-info")
                with gr.Row(equal_height=True):
                    new_status = gr.Radio(
                        ["accepted", "rejected", "submitted", "draft"],
                        value="accepted",
                        label="Review the version above",
                    )
                    status_button = gr.Button("Set status", elem_id="status-button")
                status_result = gr.JSON(label="Review", visible=True)
                versions = gr.Dataframe(label="Versions of this expression's mask (newest first)", interactive=False)

            # --- Review queue ----------------------------------------------------------------
            with gr.Tab("Review queue", id="review"):
                with gr.Row(equal_height=True):
                    queue_status = gr.Dropdown(list(STATUSES), value="draft", label="Status")
                    queue_order = gr.Radio(list(ORDERS), value="most uncertain first", label="Order")
                    queue_limit = gr.Number(value=100, precision=0, minimum=1, maximum=1000, label="At most")
                    queue_button = gr.Button("Refresh", elem_id="queue-button")
                queue = gr.Dataframe(label="Click a row to correct it", interactive=False, elem_id="queue")

            manage_tabs(backend, annotator_box, mask_version, demo)

        # hidden inputs of API-only endpoints (/save_correction from a PNG, /attention from a file)
        with gr.Row(visible=False):
            api_mask = gr.File(label="mask_png", file_types=[".png"], type="filepath")
            api_result = gr.JSON(label="result")
            api_button = gr.Button("api")
            api_expression = gr.Textbox(label="expression")
            api_word = gr.Textbox(label="word")
            api_attention_button = gr.Button("api attention")
            api_request_id = gr.Textbox(label="request_id")
            api_segment_button = gr.Button("api segment")
            api_status_button = gr.Button("api status")
            api_queue_button = gr.Button("api queue")

        # --- wiring --------------------------------------------------------------------------
        demo.load(lambda: f"model: `{backend.model_label}`", outputs=model_info, api_visibility="private")
        demo.load(_signed_in, None, annotator_box, api_visibility="private")
        upload.change(seg.preview, [upload, bands], [preview, image_info], api_visibility="private")
        bands.blur(seg.preview, [upload, bands], [preview, image_info], api_visibility="private")
        # the page's events warn and keep every output on a refusal; API clients get the error
        # from the endpoint of the same name (a hidden button, same inputs and outputs)
        segment_inputs = [upload, expressions, bands, threshold, annotator_box, session]
        segment_outputs = [overlay, probabilities, mask_files, summary, details, session]
        segment_event = segment_button.click(
            on_page(seg.segment, len(segment_outputs)),
            segment_inputs,
            segment_outputs,
            api_visibility="private",
            **model_events,
        )
        api_segment_button.click(seg.segment, segment_inputs, segment_outputs, api_name="segment", **model_events)
        segment_event.success(
            seg.attention_choices, session, [attention_expression, attention_word], api_visibility="private"
        ).then(
            seg.render_attention,
            [session, attention_expression, attention_word],
            [query_map, word_bars, pixel_word_map, tcsa_map],
            api_visibility="private",
        )
        segment_event.success(_recent_choices, session, [recent, mask_version], api_visibility="private")
        attention_expression.input(
            seg.word_choices, [session, attention_expression], attention_word, api_visibility="private"
        ).then(
            seg.render_attention,
            [session, attention_expression, attention_word],
            [query_map, word_bars, pixel_word_map, tcsa_map],
            api_visibility="private",
        )
        attention_word.input(
            seg.render_attention,
            [session, attention_expression, attention_word],
            [query_map, word_bars, pixel_word_map, tcsa_map],
            api_visibility="private",
        )
        api_attention_button.click(
            seg.attention_for,
            [upload, api_expression, api_word, bands],
            [query_map, word_bars, pixel_word_map, tcsa_map],
            api_name="attention",
            **model_events,
        )
        recent.input(lambda v: v, recent, mask_version, api_visibility="private")
        open_button.click(
            on_page(rev.open_from_session, 4),
            [session, mask_version],
            [editor, editing, item_info, versions],
            api_visibility="private",
        )
        save_button.click(
            on_page(rev.save_from_editor, 3),
            [editing, editor, note, annotator_box],
            [save_info, editing, versions],
            api_visibility="private",
        ).success(_edited_version, editing, mask_version, api_visibility="private")
        status_inputs = [mask_version, new_status, note, annotator_box]
        status_button.click(
            on_page(rev.set_status, 2), status_inputs, [status_result, versions], api_visibility="private"
        )
        api_status_button.click(rev.set_status, status_inputs, [status_result, versions], api_name="set_status")
        api_button.click(
            rev.save_correction,
            [mask_version, api_mask, note, annotator_box, api_request_id],
            api_result,
            api_name="save_correction",
        )
        queue_inputs = [queue_status, queue_order, queue_limit]
        queue_button.click(on_page(rev.review_queue, 1), queue_inputs, queue, api_visibility="private")
        api_queue_button.click(rev.review_queue, queue_inputs, queue, api_name="review_queue")
        queue.select(rev.pick_from_queue, queue, mask_version, api_visibility="private").success(
            on_page(rev.open_item, 4), mask_version, [editor, editing, item_info, versions], api_visibility="private"
        ).success(lambda: gr.Tabs(selected="correct"), None, tabs, api_visibility="private")
    return demo


def _recent_choices(session: Any) -> tuple[dict[str, Any], Any]:
    """The Correct tab's list after a segmentation: one entry per expression, first selected."""
    if session is None or not session.mask_version_ids:
        return gr.update(choices=[], value=None), None
    choices = [(f"{p.expression} · version {v}", v) for p, v in zip(session.predictions, session.mask_version_ids)]
    return gr.update(choices=choices, value=choices[0][1]), choices[0][1]


def _edited_version(editing: Any) -> Any:
    """After a save: the mask version now in the editor (unchanged when nothing was saved)."""
    return gr.skip() if editing is None else editing.mask_version_id


def _signed_in(request: gr.Request) -> dict[str, Any]:
    """With ``--auth`` the annotator is the signed-in user: show it and lock the box."""
    user = getattr(request, "username", None)
    return gr.update(value=user, interactive=False) if user else gr.update()
