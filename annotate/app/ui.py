"""The Gradio app's layout and wiring (hysts' Spaces style: no logic here, handlers do it).

Every action has a named API endpoint (see ``docs/api.md``). A segmentation shows its overlay
as soon as the model is done; the store write, probability maps and mask files follow in a
second step. Only model runs wait for each other (``concurrency_limit`` of them at a time, see
:class:`~annotate.app.handlers.SegmentHandlers`); the rest of each request runs beside other users'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from annotate.app.guards import on_page

from ..jobs.finetune_quick import DEFAULT_ADAPT_AFTER
from .adapt import AdaptHandlers
from .examples import AppExample
from .handlers import SegmentHandlers, add_expression
from .inputs import IMAGE_SUFFIXES, MAX_EXPRESSIONS
from .review import ReviewHandlers
from .ui_manage import manage_tabs
from .ui_review import ANNOTATOR_KEY, review_tabs, shortcuts_js
from .ui_style import CSS, HEAD

TITLE = "SBANet · referring segmentation for aerial images"
INTRO = (
    "Upload an aerial image, say what to segment, correct the mask (brush, polygon, region clicks) and save it. "
    "Every button is also an API endpoint (*Use via API*, at the bottom)."
)
MODEL_GROUP = "model"  # the concurrency group of endpoints that are one model run and nothing else
# Segment clicks let into their handler at once: they wait for a model slot there, where the
# follow-up work can see them (handlers.ModelFirst), instead of in Gradio's queue, where it cannot
SEGMENT_LINE = 16
SEGMENT_OUTPUTS_HELP = "Result: the overlay first, then probability maps, files and the saved drafts"
ATTENTION_CAPTION = (
    "Where the model looked for **{expression}**. Brighter means more attention; on the maps, 1 is what "
    "an even spread over the image would give. Word bars: how much each word of the sentence counted. "
    "Pixel map: which pixels listened to the word **{word}**. "
    "<span class='sbanet-note'>Technical: learnable query tokens (BAM, Eq. 1, mean over tokens), query-text "
    "alignment (Eq. 2), PWAM pixel-word attention, TCSA spatial attention (Eq. 11).</span>"
)


def build_ui(
    backend: Any,
    *,
    examples: list[AppExample] | None = None,
    concurrency_limit: int = 1,
    adapt_after: int = DEFAULT_ADAPT_AFTER,
) -> gr.Blocks:
    """The whole app over ``backend`` (the real :class:`~annotate.app.backend.Backend` or a fake);
    ``adapt_after``: saved corrections before "Adapt to my corrections" is offered."""
    seg = SegmentHandlers(backend, model_slots=concurrency_limit)
    rev = ReviewHandlers(backend)
    model_events = {"concurrency_limit": concurrency_limit, "concurrency_id": MODEL_GROUP}
    private = {"api_visibility": "private"}
    # Gradio's own cache (uploads, returned files) is swept hourly of files older than a day
    with gr.Blocks(title="SBANet", delete_cache=(3600, 86400)) as demo:
        session = gr.State(None)
        saved_annotator = gr.BrowserState("", storage_key=ANNOTATOR_KEY)
        attention_open = gr.State(False)  # the Attention tab was opened after the Segment tab
        with gr.Row(elem_id="header"):
            with gr.Column(scale=4, min_width=300):
                gr.Markdown(f"## {TITLE}\n{INTRO}", elem_id="title")
                model_info = gr.Markdown(elem_classes="sbanet-note", elem_id="model-info")
            with gr.Column(scale=1, min_width=220):
                annotator_box = gr.Textbox(label="Annotator", placeholder="your name", elem_id="annotator", max_lines=1)

        with gr.Tabs(selected="segment", overflow_behavior="wrap") as tabs:
            # --- Segment ---------------------------------------------------------------------
            with gr.Tab("Segment", id="segment") as segment_tab, gr.Row(elem_id="segment-row"):
                with gr.Column(scale=2, min_width=300):
                    upload = gr.File(
                        label="Image (PNG, JPEG, TIFF / GeoTIFF: any bands and bit depth)",
                        file_types=list(IMAGE_SUFFIXES),
                        type="filepath",
                        height=120,
                        elem_id="upload",
                    )
                    expressions = gr.Textbox(
                        label=f"What to segment (one expression per line, up to {MAX_EXPRESSIONS})",
                        placeholder="the water\nall buildings",
                        lines=2,
                        max_lines=MAX_EXPRESSIONS,
                        elem_id="expressions",
                    )
                    # "What can I ask?": the model's taught classes, one chip per canonical wording
                    # (once: two sources' classes can share one, as GID's cropland and farmland do)
                    taught = seg.taught
                    with gr.Row(elem_id="what-can-i-ask", visible=bool(taught)):
                        gr.Markdown("What can I ask?", elem_classes="sbanet-note")
                        chips = [
                            (gr.Button(wording, size="sm", min_width=0, elem_classes="sbanet-chip"), wording)
                            for wording in dict.fromkeys(w[0] for w in taught.values() if w)
                        ]
                    segment_button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                    example_gallery = gr.Gallery(
                        value=[(e.thumbnail, e.caption) for e in examples or []],
                        label="Examples: real aerial images (Dubai, public domain); click one to run it",
                        columns=4,
                        height=170,
                        allow_preview=False,
                        object_fit="cover",
                        visible=bool(examples),
                        elem_id="examples",
                    )
                    with gr.Accordion("Options", open=False):
                        bands = gr.Textbox(
                            label="Bands shown as R,G,B (counted from 1; blank: 1,2,3)", placeholder="e.g. 4,3,2"
                        )
                        threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold")
                        gsd = gr.Textbox(
                            label="Ground sampling distance, m/px: resample to the model's scale "
                            "('auto': a GeoTIFF's own; blank or 'off': resize as usual)",
                            placeholder="e.g. 0.5, or auto",
                            elem_id="gsd",
                        )
                        keep_untrusted = gr.Checkbox(
                            value=False,
                            label="Save 'nothing found' results as drafts too (normally they are not queued)",
                            elem_id="keep-untrusted",
                        )
                    preview = gr.Image(label="As the model sees it", interactive=False, height=220, format="png")
                    image_info = gr.Markdown(elem_classes="sbanet-note")
                with gr.Column(scale=3, min_width=300):
                    overlay = gr.AnnotatedImage(label="Masks", elem_id="overlay", height=520, format="png")
                    summary = gr.Markdown(elem_id="segment-summary")
                    probabilities = gr.Gallery(label="Probability maps", columns=4, height=220, format="png")
                    mask_files = gr.File(label="Masks at full resolution (PNG 0/255)", file_count="multiple")
                    with gr.Accordion("Details (JSON)", open=False):
                        details = gr.JSON(label="Details")

            # --- Attention -------------------------------------------------------------------
            with gr.Tab("Attention", id="attention") as attention_tab:
                with gr.Row(equal_height=True):
                    attention_expression = gr.Dropdown(label="Expression", choices=[], elem_id="attention-expression")
                    attention_word = gr.Dropdown(label="Word (pixel map)", choices=[], elem_id="attention-word")
                    shared_scale = gr.Checkbox(
                        value=False,
                        label="Same colour scale for every stage (flat maps then look flat)",
                        elem_id="shared-scale",
                    )
                attention_caption = gr.Markdown(
                    "Segment an image first: this tab shows what the model looked at for each expression.",
                    elem_id="attention-caption",
                )
                query_map = gr.Image(
                    label="Where the model looked, at four scales (fine → coarse)",
                    interactive=False,
                    format="png",
                    elem_id="query-map",
                )
                word_bars = gr.Image(
                    label="How much each word counted", interactive=False, format="png", elem_id="word-bars"
                )
                pixel_word_map = gr.Image(
                    label="Which pixels listened to the chosen word", interactive=False, format="png"
                )
                tcsa_map = gr.Image(label="Which regions mattered most", interactive=False, format="png")

            adapt = AdaptHandlers(backend, adapt_after)
            correct = review_tabs(rev, annotator_box, session, tabs, demo, adapt)
            manage_tabs(backend, annotator_box, correct.mask_version, demo)

        # hidden inputs of API-only endpoints (/segment in one call, /attention from a file,
        # /save_correction from a PNG)
        with gr.Row(visible=False):
            api_mask = gr.File(label="mask_png", file_types=[".png"], type="filepath")
            api_result = gr.JSON(label="result")
            api_button = gr.Button("api")
            api_segment_button = gr.Button("api segment")
            api_expression = gr.Textbox(label="expression")
            api_word = gr.Textbox(label="word")
            api_attention_button = gr.Button("api attention")
            api_request_id = gr.Textbox(label="request_id")

        # --- wiring --------------------------------------------------------------------------
        demo.load(lambda: f"model: `{backend.model_label}`", outputs=model_info, **private)
        demo.load(_annotator_name, saved_annotator, annotator_box, **private)
        annotator_box.change(lambda name: name, annotator_box, saved_annotator, **private)
        upload.change(seg.preview, [upload, bands], [preview, image_info], **private)
        bands.blur(seg.preview, [upload, bands], [preview, image_info], **private)

        pictures = [query_map, word_bars, pixel_word_map, tcsa_map]
        # the pictures are 0.5-0.9 s of CPU: drawn while the Attention tab is open, or when it opens
        attention_inputs = [session, attention_expression, attention_word, shared_scale, attention_open]

        def draw_attention(event: Any) -> Any:
            return event.then(seg.attention_if_shown, attention_inputs, pictures, **private).then(
                _attention_caption, [attention_expression, attention_word], attention_caption, **private
            )

        segment_tab.select(lambda: False, None, attention_open, **private)
        draw_attention(attention_tab.select(lambda: True, None, attention_open, **private))

        # the page's events warn and keep every output on a refusal (on_page); API clients get
        # the error from the endpoint of the same name (a hidden button, same inputs and outputs)
        def run_segmentation(trigger: Any) -> None:
            """Overlay first (one model run), then the store write, maps and files, then attention
            (drawn only if its tab is open)."""
            shown = trigger(
                on_page(seg.run_model, 3),
                [upload, expressions, bands, threshold, session, gsd],
                [overlay, summary, session],
                show_progress="minimal",
                concurrency_id="segment-line",
                concurrency_limit=SEGMENT_LINE,
                **private,
            )
            finished = shown.success(
                on_page(seg.finish, 5),
                [session, annotator_box, keep_untrusted],
                [probabilities, mask_files, summary, details, session],
                **private,
            )
            finished.success(correct.recent_choices, session, [correct.recent, correct.mask_version], **private)
            draw_attention(
                finished.success(seg.attention_choices, session, [attention_expression, attention_word], **private)
            )

        run_segmentation(segment_button.click)
        for chip, wording in chips:
            chip.click(_chip_filler(wording), expressions, expressions, show_progress="hidden", **private)
        example_picked = example_gallery.select(
            _example_inputs(examples or []), None, [upload, expressions], show_progress="hidden", **private
        )
        run_segmentation(example_picked.then)
        api_segment_button.click(
            seg.segment,
            [upload, expressions, bands, threshold, annotator_box, session, keep_untrusted, gsd],
            [overlay, probabilities, mask_files, summary, details, session],
            api_name="segment",
        )
        draw_attention(
            attention_expression.input(seg.word_choices, [session, attention_expression], attention_word, **private)
        )
        draw_attention(attention_word.input(lambda: None, None, None, **private))
        draw_attention(shared_scale.input(lambda: None, None, None, **private))
        api_button.click(
            rev.save_correction,
            [correct.mask_version, api_mask, correct.note, annotator_box, api_request_id],
            api_result,
            api_name="save_correction",
        )
        api_attention_button.click(
            seg.attention_for,
            [upload, api_expression, api_word, bands],
            pictures,
            api_name="attention",
            **model_events,
        )
    return demo


def _chip_filler(wording: str) -> Callable[[str | None], str]:
    """The handler of a click on a "What can I ask?" chip: ``wording`` added to the expression box."""
    return lambda current: add_expression(current, wording)


def _example_inputs(examples: list[AppExample]) -> Any:
    """The handler of a click on an example thumbnail: its image and expressions."""

    def load(event: gr.SelectData) -> tuple[str, str]:
        example = examples[int(event.index)]
        return example.image, example.expressions

    return load


def _attention_caption(expression: str | None, word: str | None) -> str:
    if not expression:
        return "Segment an image first: this tab shows what the model looked at for each expression."
    return ATTENTION_CAPTION.format(expression=f"'{expression}'", word=f"'{word or '–'}'")


def _annotator_name(saved: str | None, request: gr.Request) -> dict[str, Any]:
    """With ``--auth`` the annotator is the signed-in user (box locked); else the name this
    browser typed last time (kept in its local storage)."""
    user = getattr(request, "username", None)
    if user:
        return gr.update(value=user, interactive=False)
    return gr.update(value=saved) if saved else gr.update()


def launch_options() -> dict[str, Any]:
    """What :func:`annotate.app.launch.launch_kwargs` adds for this layout: its CSS and the page's
    Ctrl+S (the mask canvas has its own shortcuts)."""
    return {"css": CSS, "head": HEAD, "js": shortcuts_js()}
