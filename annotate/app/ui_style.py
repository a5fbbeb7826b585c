"""The app's CSS: a compact first screen on a laptop and a phone layout that stacks.

At 1440×900 the Segment button and the examples sit above the fold; below 700 px wide the
header stacks (title over the annotator box instead of a squeezed column), the tabs wrap onto
two rows, the editor's toolbar stops covering its help, and *Use via API* stays in the footer
(Gradio hides it on narrow screens).
"""

from __future__ import annotations

CSS = """
#segment-summary table { font-size: 0.9em; }
.sbanet-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
#what-can-i-ask { gap: 0.3em; align-items: center; flex-wrap: wrap !important; }
#what-can-i-ask > * { flex: 0 0 auto !important; min-width: 0 !important; width: auto !important; }
.sbanet-chip { flex: 0 0 auto !important; width: auto !important; white-space: nowrap; }
#title h2 { margin: 0 0 0.2em 0; }
#title p { margin: 0; }
#model-info p { margin: 0.2em 0 0 0; }
#editor-legend p { margin: 0; }
.sbanet-swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px;
  vertical-align: -0.1em; margin: 0 0.25em 0 0.6em; border: 1px solid #0003; }
@media (max-width: 700px) {
  #header { flex-direction: column; flex-wrap: wrap; gap: 0.4em; }
  #header > div { min-width: 100% !important; width: 100%; }
  #title h2 { font-size: 1.2em; }
  #mask-editor { min-height: 420px; }
  #editor-help { margin-top: 0.5em; }
}
"""
# Gradio scopes the custom CSS to its container; the footer is outside it, so this goes in <head>
HEAD = """<style>
@media (max-width: 700px) { footer .show-api, footer .show-api-divider { display: flex !important; } }
</style>"""
