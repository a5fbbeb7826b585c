"""Mask editing tools, numpy in and numpy out (no Gradio, no store): region clicks snapped to the
image's edges (:mod:`.regions`), polygons, hole filling, speck removal and the undo history
(:mod:`.shapes`). The Correct tab and the correction-effort benchmark call the same functions."""
