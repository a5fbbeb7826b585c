"""Layout and wiring of the Fine-tune and Export tabs (called by :func:`annotate.app.ui.build_ui`
inside its ``gr.Tabs``)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..store.export import FORMATS
from .manage import SELECTIONS, ManageHandlers

POLL_SECONDS = 2.0
FORMAT_LABELS = {
    "refsegrs": "RefSegRS: images, masks and referring sentences",
    "png": "PNG: one 0/255 mask per expression beside its image",
    "rrsisd": "RRSIS-D: RefCOCO-style refs + instances JSON",
    "coco": "COCO: instances JSON with RLE masks",
    "geotiff": "GeoTIFF: masks on the image's grid (georeferenced images only)",
}


def manage_tabs(backend: Any, annotator_box: gr.Textbox, mask_version: gr.Number, demo: gr.Blocks) -> None:
    """Add the Fine-tune and Export tabs and wire them (named API endpoints included)."""
    manage = ManageHandlers(backend)
    with gr.Tab("Fine-tune", id="finetune"):
        gr.Markdown(
            "Train a model version on the accepted corrections in the background, watch it, and compare "
            "it with its base on held-out reviewed masks. Expressions are split train / held out once, "
            "by a stable hash, so a mask is never both trained on and used to measure. By default the "
            "steps grow with the number of corrections, the base's own training data is mixed in where "
            "it is available (so it does not forget), and training stops once the held-out masks stop "
            "improving, keeping the best weights.",
            elem_classes="sbanet-note",
        )
        with gr.Row(equal_height=True):
            base_choice = gr.Dropdown(label="Base model", choices=[], scale=2)
            base_model = gr.Number(label="Base model version")  # ids unrounded: 1.5 is refused
            include_imported = gr.Checkbox(value=True, label="Also train on imported accepted masks")
        with gr.Row(equal_height=True):
            steps = gr.Number(value=None, minimum=1, label="Steps (blank: more corrections, more steps)")
            batch_size = gr.Number(value=4, minimum=1, label="Batch size")
            lr = gr.Number(value=3e-4, label="Learning rate")
            activate_better = gr.Checkbox(value=False, label="Make active if it beats the base (mIoU)")
        data_summary = gr.Markdown()
        with gr.Accordion("Accepted masks a run would use", open=False), gr.Row():
            train_masks = gr.Dataframe(label="Trained on (train split)", interactive=False)
            held_out_masks = gr.Dataframe(label="Held out (val / test split)", interactive=False)
        with gr.Row():
            start_button = gr.Button("Start fine-tuning", variant="primary")
            run = gr.Number(label="Run", elem_id="finetune-run")
            refresh_button = gr.Button("Refresh")
            cancel_button = gr.Button("Cancel run", variant="stop")
        progress = gr.Markdown()
        with gr.Row():
            metrics = gr.Dataframe(label="Held-out metrics: base vs fine-tuned", interactive=False)
            log = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True)
        run_status = gr.JSON(label="Run status", visible=False)
        with gr.Row(equal_height=True):
            gr.Markdown("### Model versions")
            models_button = gr.Button("Refresh list", scale=0)
        models = gr.Dataframe(interactive=False)
        with gr.Row(equal_height=True):
            activate_choice = gr.Dropdown(label="Model version", choices=[], scale=2)
            activate_version = gr.Number(label="Model version id")
            activate_button = gr.Button("Make active for everyone")
        activated = gr.Markdown()
        timer = gr.Timer(POLL_SECONDS, active=False)

    with gr.Tab("Export", id="export"):
        with gr.Row(equal_height=True):
            export_format = gr.Dropdown(
                [(FORMAT_LABELS.get(f, f), f) for f in FORMATS], value="coco", label="Format", scale=2
            )
            export_selection = gr.Radio(list(SELECTIONS), value="accepted masks", label="Which masks")
            export_button = gr.Button("Export dataset", variant="primary")
        export_info = gr.Markdown()
        export_file = gr.File(label="Dataset (zip)")
        gr.Markdown("### One mask version (PNG; GeoTIFF, GeoPackage and GeoJSON for georeferenced images)")
        with gr.Row(equal_height=True):
            mask_to_export = gr.Number(label="Mask version")
            mask_button = gr.Button("Download mask files")
        mask_files = gr.File(label="Mask files", file_count="multiple")
        gr.Markdown("### Back up the store to a Hugging Face dataset repo (token from `$HF_TOKEN`)")
        with gr.Row(equal_height=True):
            repo_id = gr.Textbox(label="Dataset repo", placeholder="your-name/sbanet-annotations", scale=2)
            backup_button = gr.Button("Back up now")
        backup_info = gr.Markdown()

    # --- wiring --------------------------------------------------------------------------------
    private = {"api_visibility": "private"}
    demo.load(manage.model_table, None, [models, base_choice], **private)
    demo.load(manage.model_table, None, [models, activate_choice], **private)
    demo.load(manage.finetune_data, include_imported, [data_summary, train_masks, held_out_masks], **private)
    base_choice.change(lambda v: v, base_choice, base_model, **private)
    activate_choice.input(lambda v: v, activate_choice, activate_version, **private)
    include_imported.change(
        manage.finetune_data, include_imported, [data_summary, train_masks, held_out_masks], **private
    )
    mask_version.change(lambda v: v, mask_version, mask_to_export, **private)
    start_button.click(
        manage.start,
        [base_model, steps, batch_size, lr, include_imported, activate_better, annotator_box],
        [run, run_status],
        api_name="start_finetune",
    ).success(lambda: gr.Timer(active=True), None, timer, **private)
    refresh_button.click(manage.status, run, [run_status, progress, log, metrics], api_name="finetune_status")
    timer.tick(manage.poll, run, [run_status, progress, log, metrics, timer], **private).then(
        manage.model_table, None, [models, activate_choice], **private
    )
    cancel_button.click(manage.cancel, run, run_status, api_name="cancel_finetune")
    models_button.click(manage.versions, None, models, api_name="models").then(
        manage.model_table, None, [models, activate_choice], **private
    )
    activate_button.click(manage.activate, activate_version, [activated, models], api_name="activate_model")
    export_button.click(manage.export, [export_format, export_selection], [export_file, export_info], api_name="export")
    mask_button.click(manage.export_mask, mask_to_export, mask_files, api_name="export_mask")
    backup_button.click(manage.backup, repo_id, backup_info, api_name="backup_to_hub")
