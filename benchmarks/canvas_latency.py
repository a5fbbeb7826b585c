"""How long the mask canvas takes in a real browser, by picture size: opening a picture, a brush
stroke (the drag and the new 0/255 PNG value), a save (the value read back in Python).

    python -m benchmarks.canvas_latency --sides 640 1024 2048 --repeats 3 \\
        --json benchmarks/results/canvas_latency.json

The canvas alone on a page (:func:`annotate.app.mask_canvas.canvas_page`) serves on loopback;
Debian's Chromium (Playwright, 1280x900) loads the first shipped aerial example resized to each
side (square), with a quarter of it in the mask, then draws one diagonal stroke across it and
clicks *Save*. Each time counts in the page: open, from the click on *Load* until the canvas has
drawn the picture and the mask (Python's PNG encoding, transfer, decoding); stroke, from the
pointer going down until the canvas has its new value (the drag of 8 moves, the layer painted,
the PNG encoded); save, from the click until Python has decoded and checked the mask. The largest
picture the app sends the canvas is 2048 px a side (``annotate.app.review.EDITOR_SIDE``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def measure(side: int, repeats: int) -> dict:
    """Median seconds to open, stroke and save a ``side`` x ``side`` picture (and every sample)."""
    import numpy as np
    from PIL import Image

    from annotate.app.browser import Canvas, chromium_page
    from annotate.app.mask_canvas import canvas_page
    from sbanet.data.example_scenes import AERIAL_EXAMPLES

    with Image.open(AERIAL_EXAMPLES[0].path) as image:
        scene = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
    start = np.zeros((side, side), bool)
    start[side // 4 : side // 2, side // 4 : side // 2] = True
    saved: list = []
    demo = canvas_page(scene, start, saved)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    times: dict[str, list[float]] = {"open": [], "stroke": [], "save": []}
    try:
        with chromium_page(1280, 900) as page:
            page.goto(url)
            page.wait_for_selector("#canvas .mc-root")
            canvas = Canvas(page, "#canvas")
            for _ in range(repeats):
                loaded = canvas.loaded()
                started = time.perf_counter()
                page.click("#load")
                canvas.wait_loaded(loaded)
                times["open"].append(time.perf_counter() - started)
                started = time.perf_counter()
                canvas.stroke([(0.1 * side, 0.1 * side), (0.9 * side, 0.9 * side)])
                times["stroke"].append(time.perf_counter() - started)
                count = len(saved)
                started = time.perf_counter()
                page.click("#save")
                page.wait_for_function(
                    "n => document.querySelector('#info').innerText.includes(`saved ${n}`)", arg=count + 1
                )
                times["save"].append(time.perf_counter() - started)
                if not np.array_equal(saved[-1], canvas.shown()):
                    raise RuntimeError("the saved mask is not the one the canvas shows")
    finally:
        demo.close()
    return {
        "side": side,
        **{f"median_{k}_s": round(statistics.median(v), 3) for k, v in times.items()},
        "samples_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[640, 1024, 2048], help="square picture sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    from annotate.app.browser import chromium_path

    from .correction_effort import cpu_name

    if chromium_path() is None:
        raise SystemExit("no Chromium: install Debian's chromium or set $SBANET_CHROMIUM")
    loads = [os.getloadavg()[0]]
    rows = []
    for side in args.sides:
        rows.append(measure(side, args.repeats))
        loads.append(os.getloadavg()[0])
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "samples_s"}), flush=True)
    result = {
        "command": "python -m benchmarks.canvas_latency " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_name(),
        "load_average": [min(loads), max(loads)],
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
