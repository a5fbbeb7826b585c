"""The correction-effort annotator driving the real app in Chromium, on a few of its cases.

    python -m benchmarks.correction_browser --start 3 --cases 1 --actions 4 \\
        --json benchmarks/results/correction_browser.json

For each case (the tile-6 images and class-level expressions of
:mod:`benchmarks.correction_effort`, in its order): the real app (the shipped model, a fresh store
in a temporary folder) serves on loopback; Debian's Chromium (Playwright) uploads the image,
segments it with the expression and opens the draft in the Correct tab's mask canvas. Then the
scripted annotator of :mod:`benchmarks.correction_effort` corrects the mask the canvas shows,
with the actions a click performs exactly: region clicks at each size and from the model's map,
fill holes, remove specks (its toolset ``"region"``), the canvas in its *Auto* mode (the clicked
pixel decides add or remove; ``--modes explicit``: its Add / Remove buttons; ``--modes
shortcuts``: the region's source by a modifier held during the click). Each step it reads
the mask back from the canvas, chooses as the Python annotator does (a setting change costing
``--setting-cost`` actions), performs the action on the page (the region radio button where it
changes, the canvas's tool and mode, then the click on the canvas or the button) and compares the
mask the canvas then shows with the library's result for the same action.

Brush strokes are not driven: the scripted brush paints a piece's skeleton with a disc as wide as
the piece, which a mouse drag with the canvas's round brush does not reproduce pixel for pixel
(``tests/test_app_browser_tools.py`` drives a stroke and the opacity). Reported per case: the
actions and setting changes, the IoU reached, the pixels where page and library differ after
each action, and the seconds from each action's first click to the new picture on the page.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from annotate.edit import regions

from .correction_effort import DATA, MODES, START_SETTINGS, Choice, Picture, choose, iou, write_result

ACTION_TIMEOUT_MS = 180_000
MODIFIERS = {"medium": "Shift", "large": "Alt", "model": "Control"}  # the canvas's region-source clicks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def labels() -> dict[str, str]:
    """The page's label of each region source the annotator names (``"small"``, ..., ``"model"``)."""
    from annotate.app.tools import REGION_SOURCES

    return {("model" if method == "model" else scale): label for label, (method, scale) in REGION_SOURCES.items()}


def perform(tools: Any, choice: Choice, settings: dict[str, object]) -> np.ndarray:
    """Do ``choice`` on the page (changing the radio buttons that differ from ``settings``); the
    mask the page shows afterwards."""
    from .correction_effort import HOLES, SPECKS

    if choice.tool == "fill holes":
        tools.page.fill("#hole-area input", str(HOLES))
        return tools.button("#fill-holes")
    if choice.tool == "remove specks":
        tools.page.fill("#speck-area input", str(SPECKS))
        return tools.button("#remove-specks")
    source = choice.tool.removeprefix("region ")
    if "region" in choice.needs and settings.get("region") != choice.needs["region"]:
        tools.pick(labels()[str(choice.needs["region"])], "#region-source")
    modifier = None if "region" in choice.needs else MODIFIERS[source]  # a shortcut click
    x, y = choice.point
    return tools.region(int(x), int(y), add=None if "mode" not in choice.needs else choice.add, modifier=modifier)


def unlike_library(shown: np.ndarray, choice: Choice, mask: np.ndarray, picture: Picture) -> int:
    """Pixels where the page's mask differs from the library's for ``choice``: for a region
    click, the fewest over the click and its 8 neighbours (the canvas clicks a pixel's centre, so
    the click itself should match; the neighbours are kept as a guard against a one-pixel offset)."""
    if not choice.tool.startswith("region "):
        return int(np.count_nonzero(shown != choice.after))
    scale = choice.tool.removeprefix("region ")
    if scale == "model":
        options = {"method": "model", "probability": picture.probability}
    else:
        options = {"scale": scale, "pixels": picture.pixels[scale]}
    edit = regions.add_region if choice.add else regions.remove_region  # Auto decides the same at the click
    x, y = choice.point
    height, width = mask.shape
    return min(
        int(np.count_nonzero(shown != edit(mask, picture.image, (x + dx, y + dy), **options)))
        for dx in (0, -1, 1)
        for dy in (0, -1, 1)
        if 0 <= x + dx < width and 0 <= y + dy < height
    )


def drive(
    app: Any,
    page: Any,
    name: str,
    image_path: Path,
    expression: str,
    truth: np.ndarray,
    actions: int,
    target: float,
    setting_cost: int = 1,
    modes: str = "auto",
) -> dict:
    """One case in the page (see the module docstring)."""
    from annotate.app.browser import AppPage
    from annotate.app.inputs import load_image
    from annotate.store import repository as repo

    ui = AppPage(page, app.url)
    ui.open(annotator="benchmark")
    ui.keep_untrusted()
    ui.segment(image_path, [expression])
    with app.backend.store.ReadSession() as session:
        draft = repo.review_queue(session, "draft", "recent", 1)[0].id  # the segmentation's draft
    tools = ui.open_editor(draft)
    scene = load_image(image_path).rgb  # what the app decodes: the canvas (the image is under EDITOR_SIDE)
    mask = tools.shown()
    probability = app.backend.predict(scene, [expression])[0][0].probability  # as the tool's first model click
    picture = Picture.of(scene, probability)
    settings = dict(START_SETTINGS) | ({"mode": "auto"} if modes != "explicit" else {})  # brush, small
    steps, taken, changes, score = [], 0, 0, iou(mask, truth)
    start_iou = score
    while taken < actions and score < target:
        choice = choose(picture, truth, mask, "region", settings, setting_cost, modes)
        if choice is None:
            break
        started = time.perf_counter()
        shown = perform(tools, choice, settings)
        seconds = time.perf_counter() - started
        wrong = unlike_library(shown, choice, mask, picture)
        steps.append(
            {"tool": choice.tool, "switches": choice.switches, "seconds": seconds, "pixels_unlike_library": wrong}
        )
        settings |= choice.needs
        taken, changes = taken + choice.cost, changes + choice.switches
        mask, score = shown, iou(shown, truth)
        print(f"{name:40s} {choice.tool:14s} {seconds:6.2f} s  IoU {score:.3f}  unlike library {wrong} px", flush=True)
    return {
        "case": name,
        "start_iou": round(start_iou, 4),
        "iou": round(score, 4),
        "actions": taken,
        "setting_changes": changes,
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--start", type=int, default=0, help="skip the first N cases")
    parser.add_argument("--cases", type=int, default=4, help="drive N cases with something to correct")
    parser.add_argument("--actions", type=int, default=12, help="at most this many actions per case")
    parser.add_argument("--target", type=float, default=0.90, help="mask IoU at which a case is done")
    parser.add_argument("--setting-cost", type=int, default=1, help="actions a change of tool or region size costs")
    parser.add_argument("--modes", choices=MODES, default="auto", help="how the canvas is used (correction_effort)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    from annotate.app.browser import chromium_page, chromium_path
    from annotate.app.launch import AppSettings, build_app, launch_kwargs
    from recipes.default_model.scale import CLASS_EXPRESSIONS, MIN_FRACTION
    from sbanet.data.land_cover import class_cases
    from sbanet.data.semantic import DUBAI_CLASSES
    from sbanet.inference.shipped import SHIPPED_MODEL

    if chromium_path() is None:
        raise SystemExit("no Chromium: install Debian's chromium or set $SBANET_CHROMIUM")
    root = args.data / "dubai-aerial" / "tile6"
    if not root.is_dir():
        raise SystemExit(f"no dubai-aerial tile 6 under {args.data}: see ../shared/data/README.md")
    chosen = [
        (path, expression, truth)
        for path, _, truths in class_cases(root, CLASS_EXPRESSIONS, DUBAI_CLASSES, MIN_FRACTION)
        for expression, truth in truths.items()
    ][args.start :]
    results, loads = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        settings = AppSettings(
            model=str(SHIPPED_MODEL), data_dir=folder, host="127.0.0.1", port=free_port(), examples=False
        )
        demo, backend = build_app(settings)
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(settings, backend))
        app = argparse.Namespace(url=f"http://127.0.0.1:{settings.port}/", backend=backend)
        try:
            with chromium_page(1400, 1000) as page:
                page.set_default_timeout(ACTION_TIMEOUT_MS)
                for path, expression, truth in chosen:
                    if len(results) >= args.cases:
                        break
                    name = f"{path.stem} {expression}"
                    result = drive(
                        app,
                        page,
                        name,
                        path,
                        expression,
                        truth,
                        args.actions,
                        args.target,
                        args.setting_cost,
                        args.modes,
                    )
                    if result["actions"]:  # a mask already at the target has nothing to drive
                        results.append(result)
                    loads.append(os.getloadavg()[0])
        finally:
            demo.close()
            backend.store.close()
    seconds = [s["seconds"] for r in results for s in r["steps"]]
    unlike = [s["pixels_unlike_library"] for r in results for s in r["steps"]]
    summary = {
        "cases": len(results),
        "actions": len(seconds),
        "median_seconds_per_action": float(np.median(seconds)) if seconds else None,
        "actions_unlike_library": int(sum(u > 0 for u in unlike)),
        "max_pixels_unlike_library": int(max(unlike, default=0)),
    }
    print(json.dumps(summary))
    return write_result(args.json, "correction_browser", argv, loads, {"summary": summary, "cases": results})


if __name__ == "__main__":
    main()
