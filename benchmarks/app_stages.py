"""Where one Segment click's time goes, stage by stage (used by :mod:`benchmarks.app_latency`).

The app under test runs in the benchmark's own process, so :class:`StageProbe` wraps the
functions one click passes through and records when each starts and ends (wall-clock epoch
seconds, the clock the page's ``performance.timeOrigin + performance.now()`` also reads):

* ``request + queue``: the click until the handler starts decoding (the browser's request,
  Gradio's queue and its parsing of the inputs);
* ``image decode``: :func:`annotate.app.inputs.load_image` (checks, decode, hash), or the look-up
  of :class:`annotate.app.inputs.DecodedUploads` where the app has it (the preview decoded it);
* ``preprocessing``: :meth:`sbanet.inference.predictor.Predictor.preprocess` (resize, normalise);
* ``model``: the backend's model run without the preprocessing (text, forward, masks);
* ``handler, other``: the rest of the handler (verdicts, summary);
* ``overlay render``: :func:`annotate.app.handlers.overlay_value`;
* ``encode``: Gradio turning the overlay into image files (``AnnotatedImage.postprocess``) and
  what it does between the handler's return and that;
* ``transfer``: from the encoded files until the page shows the new result (the event stream,
  the page's update);
* ``browser draw``: until the overlay image has loaded and decoded in the page.

Wrapping is for this measurement only: it patches module attributes in this process and puts
them back on :meth:`StageProbe.close`.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

STAGES = (
    "request + queue",
    "image decode",
    "preprocessing",
    "model",
    "handler, other",
    "overlay render",
    "encode",
    "transfer",
    "browser draw",
)


class StageProbe:
    """Records the start and end of each probed call of the latest click (one user at a time)."""

    def __init__(self, backend: Any) -> None:
        import gradio as gr

        from annotate.app import handlers
        from sbanet.inference.predictor import Predictor

        self._lock = threading.Lock()
        self.events: dict[str, tuple[float, float]] = {}
        self._patches: list[tuple[Any, str, Any]] = []
        from annotate.app import inputs

        if hasattr(inputs, "DecodedUploads"):  # decoded once per upload, then looked up
            self._wrap(inputs.DecodedUploads, "load", "decode")
        else:
            self._wrap(handlers, "load_image", "decode")
        self._wrap(handlers, "overlay_value", "overlay")
        self._wrap(backend, "predict", "predict")
        self._wrap(Predictor, "preprocess", "preprocess")
        self._wrap(gr.AnnotatedImage, "postprocess", "encode")

    def _wrap(self, owner: Any, name: str, event: str) -> None:
        original = getattr(owner, name)  # a class's function stays unbound: ``timed`` passes self on
        self._patches.append((owner, name, owner.__dict__.get(name)))

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.events[event] = (start, time.time())

        setattr(owner, name, timed)

    def reset(self) -> None:
        with self._lock:
            self.events = {}

    def stages(self, click: float, shown: float, drawn: float) -> dict[str, float] | None:
        """Seconds per stage of the click made at epoch ``click`` whose result showed at ``shown``
        and whose overlay finished loading at ``drawn`` (None when a probe did not fire)."""
        with self._lock:
            events = dict(self.events)
        if not {"decode", "predict", "preprocess", "overlay", "encode"} <= events.keys():
            return None
        decode, predict, prep, overlay, encode = (
            events[k] for k in ("decode", "predict", "preprocess", "overlay", "encode")
        )
        handler = overlay[1] - decode[0]
        parts = {
            "request + queue": decode[0] - click,
            "image decode": decode[1] - decode[0],
            "preprocessing": prep[1] - prep[0],
            "model": (predict[1] - predict[0]) - (prep[1] - prep[0]),
            "overlay render": overlay[1] - overlay[0],
            "encode": encode[1] - overlay[1],
            "transfer": shown - encode[1],
            "browser draw": drawn - shown,
        }
        parts["handler, other"] = handler - parts["image decode"] - (predict[1] - predict[0]) - parts["overlay render"]
        return {k: parts[k] for k in STAGES}

    def close(self) -> None:
        for owner, name, original in reversed(self._patches):
            if original is None:  # an instance's method came from its class: drop the wrapper
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._patches = []


def stage_table(per_click: list[dict[str, float]], totals: list[float]) -> dict[str, Any]:
    """Median (min-max) seconds per stage over the clicks, and their sum against the click's total."""
    rows = {}
    for stage in STAGES:
        values = [c[stage] for c in per_click]
        rows[stage] = {
            "median": round(statistics.median(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
        }
    rows["sum of medians"] = round(sum(r["median"] for r in rows.values()), 3)
    rows["click to overlay, median"] = round(statistics.median(totals), 3)
    return rows


def print_stage_table(label: str, table: dict[str, Any]) -> None:
    print(f"\nOne Segment click, stage by stage ({label}; seconds, median (min-max) over the clicks):")
    for stage in STAGES:
        row = table[stage]
        print(f"  {stage:16s} {row['median']:7.3f}  ({row['min']:.3f}-{row['max']:.3f})")
    print(f"  {'sum of medians':16s} {table['sum of medians']:7.3f}")
    print(f"  {'click to overlay':16s} {table['click to overlay, median']:7.3f}")
