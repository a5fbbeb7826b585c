"""The correction-effort annotator driving the real app in Chromium, on a few of its cases.

    python -m benchmarks.correction_browser --start 3 --cases 1 --actions 4 \\
        --json benchmarks/results/correction_browser.json
    python -m benchmarks.correction_browser --cases 4 --actions 60 --modes shortcuts \\
        --toolsets brush brush+region brush+region+polygon --json benchmarks/results/correction_browser_toolsets.json

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

With ``--toolsets`` it drives the other toolsets too: a brush stroke is a drag along the
longest path through the piece's skeleton near its innermost pixel (:func:`stroke_path`, the
brush as wide as the piece there; a person's one drag, so where the skeleton branches it covers
less than the scripted stroke, which paints every branch), a polygon one click per vertex and a
last one on the first vertex, which closes it. Reported per case and toolset: the actions and
setting changes, the IoU reached, the pixels where page and library differ after each action
(strokes and polygons recomputed by :mod:`annotate.edit.shapes` from the points the canvas
logged), and the seconds from each action's first click to the new picture on the page.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from annotate.app.browser import free_port
from annotate.edit import regions, shapes

from .correction_effort import DATA, MODES, START_SETTINGS, TOOLSETS, Choice, Picture, choose, iou, write_result

ACTION_TIMEOUT_MS = 180_000
MODIFIERS = {"medium": "Shift", "large": "Alt", "model": "Control"}  # the canvas's region-source clicks


def stroke_path(piece: np.ndarray) -> tuple[list[tuple[float, float]], int]:
    """The drag a person makes for the scripted brush stroke on ``piece`` (``bool [H, W]``):
    the longest path through its :func:`~benchmarks.correction_effort.stroke_skeleton` (every
    third pixel, at pixel centres), and the brush size (as wide as the piece there). One drag
    follows one path: where the skeleton branches, the scripted stroke (which paints every
    branch) covers more."""
    from .correction_effort import stroke_skeleton

    skeleton, (x, y), radius = stroke_skeleton(piece)
    pixels = {(int(c), int(r)) for r, c in zip(*np.nonzero(skeleton), strict=True)}

    def farthest(start: tuple[int, int]) -> tuple[tuple[int, int], dict]:
        parent: dict = {start: None}
        queue, last = deque([start]), start
        while queue:
            last = queue.popleft()
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                step = (last[0] + dx, last[1] + dy)
                if step in pixels and step not in parent:
                    parent[step] = last
                    queue.append(step)
        return last, parent

    end, _ = farthest((x, y))
    other, parent = farthest(end)
    path, at = [], other
    while at is not None:
        path.append(at)
        at = parent[at]
    points = [(px + 0.5, py + 0.5) for px, py in path[::3] + ([path[-1]] if (len(path) - 1) % 3 else [])]
    return points, 2 * radius + 1


def perform(tools: Any, choice: Choice, settings: dict[str, object], modes: str) -> np.ndarray:
    """Do ``choice`` on the page (changing the tool, mode and radio buttons that differ from
    ``settings``); the mask the page shows afterwards."""
    from .correction_effort import HOLES, SPECKS, polygon_vertices

    tool = choice.needs.get("tool")
    if tool is not None and tools.state()["tool"] != tool:
        tools.tool(str(tool))
    if "mode" in choice.needs and tools.state()["mode"] != choice.needs["mode"]:
        tools.tool(str(choice.needs["mode"]))
    if choice.tool == "brush":
        path, size = stroke_path(choice.piece)
        tools.set_size(size)  # free, as in the scripted annotator
        if len(path) == 1:  # a dot: with the region tool a press that does not move is a click, so drag a little
            state = tools.state()
            x, y = path[0]
            step = 6 / state["scale"]  # screen pixels, past the canvas's 4-pixel click slop
            path.append((x + step if x + step < state["width"] else x - step, y))
        # with the shortcuts a right drag with the brush erases
        tools.stroke(path, button="right" if modes == "shortcuts" and not choice.add else "left")
        return tools.shown()
    if choice.tool == "polygon":
        vertices = polygon_vertices(choice.piece)
        revision = tools.revision()
        for vertex in [*vertices, vertices[0]]:  # the last click, on the first vertex, closes it
            tools.click(*vertex)
        tools.wait_revision(revision)
        return tools.shown()
    if choice.tool == "fill holes":
        tools.page.fill("#hole-area input", str(HOLES))
        return tools.button("#fill-holes")
    if choice.tool == "remove specks":
        tools.page.fill("#speck-area input", str(SPECKS))
        return tools.button("#remove-specks")
    source = choice.tool.removeprefix("region ")
    if "region" in choice.needs and settings.get("region") != choice.needs["region"]:
        from annotate.app.tools import CLICK_SOURCES  # gradio: only when a page is driven

        tools.pick(CLICK_SOURCES[str(choice.needs["region"])], "#region-source")
    modifier = None if "region" in choice.needs else MODIFIERS[source]  # a shortcut click
    x, y = choice.point
    return tools.region(int(x), int(y), add=None if "mode" not in choice.needs else choice.add, modifier=modifier)


def unlike_library(shown: np.ndarray, choice: Choice, mask: np.ndarray, picture: Picture, step: dict) -> int:
    """Pixels where the page's mask differs from the library's for ``choice``: a stroke or a
    polygon recomputed by :mod:`annotate.edit.shapes` from the points the canvas logged
    (``step``, its last log entry); for a region click, the fewest over the click and its 8
    neighbours (the canvas clicks a pixel's centre, so the click itself should match; the
    neighbours are kept as a guard against a one-pixel offset)."""
    if choice.tool == "brush":
        return int(np.count_nonzero(shown != shapes.stroke(mask, step["points"], step["size"], bool(step["value"]))))
    if choice.tool == "polygon":
        return int(np.count_nonzero(shown != shapes.polygon(mask, step["points"], bool(step["value"]))))
    if not choice.tool.startswith("region "):
        return int(np.count_nonzero(shown != choice.after))
    options = picture.region_options(choice.tool.removeprefix("region "))
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
    toolset: str = "region",
) -> dict:
    """One case in the page with one toolset (see the module docstring)."""
    from annotate.app.browser import AppPage
    from annotate.app.inputs import load_image
    from annotate.store import repository as repo

    ui = AppPage(page, app.url)
    for attempt in range(2):  # once more on a fresh page if the upload hangs (seen once, cause unknown)
        ui.open(annotator="benchmark")
        ui.keep_untrusted()
        try:
            ui.segment(image_path, [expression])
            break
        except TimeoutError as exc:
            print(f"{name}: {exc}; {'retrying on a fresh page' if attempt == 0 else 'giving up'}", flush=True)
            if attempt:
                raise
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
        choice = choose(picture, truth, mask, toolset, settings, setting_cost, modes)
        if choice is None:
            break
        started = time.perf_counter()
        shown = perform(tools, choice, settings, modes)
        seconds = time.perf_counter() - started
        logged = tools.log()[-1] if choice.tool in ("brush", "polygon") else {}
        wrong = unlike_library(shown, choice, mask, picture, logged)
        steps.append(
            {"tool": choice.tool, "switches": choice.switches, "seconds": seconds, "pixels_unlike_library": wrong}
        )
        settings |= choice.needs
        taken, changes = taken + choice.cost, changes + choice.switches
        mask, score = shown, iou(shown, truth)
        print(f"{name:40s} {choice.tool:14s} {seconds:6.2f} s  IoU {score:.3f}  unlike library {wrong} px", flush=True)
    return {
        "case": name,
        "toolset": toolset,
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
    parser.add_argument(
        "--toolsets", nargs="+", choices=("region", *TOOLSETS), default=["region"], help="toolsets to drive, each case"
    )
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
                    if len({r["case"] for r in results}) >= args.cases:
                        break
                    name = f"{path.stem} {expression}"
                    for toolset in args.toolsets:
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
                            toolset,
                        )
                        if not result["actions"]:  # a mask already at the target has nothing to drive
                            break
                        results.append(result)
                        loads.append(os.getloadavg()[0])
        finally:
            demo.close()
            backend.store.close()
    seconds = [s["seconds"] for r in results for s in r["steps"]]
    unlike = [s["pixels_unlike_library"] for r in results for s in r["steps"]]
    toolsets = {}
    for toolset in args.toolsets:
        runs = [r for r in results if r["toolset"] == toolset]
        if runs:  # actions to the target, or the cap (--actions) where it was not reached, as correction_effort
            counted = [r["actions"] if r["iou"] >= args.target else max(r["actions"], args.actions) for r in runs]
            toolsets[toolset] = {
                "cases": len(runs),
                "median_actions": float(np.median(counted)),
                "reached": float(np.mean([r["iou"] >= args.target for r in runs])),
                "median_iou": float(np.median([r["iou"] for r in runs])),
            }
    summary = {
        "cases": len({r["case"] for r in results}),
        "toolsets": toolsets,
        "steps": len(seconds),
        "median_seconds_per_action": float(np.median(seconds)) if seconds else None,
        "actions_unlike_library": int(sum(u > 0 for u in unlike)),
        "max_pixels_unlike_library": int(max(unlike, default=0)),
    }
    print(json.dumps(summary))
    return write_result(args.json, "correction_browser", argv, loads, {"summary": summary, "cases": results})


if __name__ == "__main__":
    main()
