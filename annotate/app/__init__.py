"""The Gradio app built on the store: layout, handlers, review, rendering, inputs,
downloads, launch, browser driver."""
