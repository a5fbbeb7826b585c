"""How long a Segment click takes in a real browser (one user and four at once), and the README's
screenshots.

    python -m benchmarks.app_latency --model sbanet/assets/sbanet-lite-landcover --repeats 7 \\
        --against before=http://127.0.0.1:7870/ --json benchmarks/results/app_latency.json \\
        --screenshots docs/screenshots
    python -m benchmarks.app_latency --preset sbanet_lite      # random weights: the same cost

The app is built exactly as ``app.py`` builds it (fresh store in a temporary folder) and served on
loopback; ``--against label=URL`` also measures apps already running (e.g. ``python app.py
--port 7870`` started from another checkout: before vs after, side by side, clicks alternating).
Debian's Chromium, driven by Playwright (:mod:`annotate.app.browser`), uploads a shipped aerial
example, types one expression and clicks Segment ``repeats`` times (after one warm-up click).
Each time counts in the page, from the click until the overlay image has loaded: request, queue,
model, overlay, transfer and drawing (the store write, probability maps and files come after it).
Then ``--users`` pages click at the same moment (``--user-rounds`` times; every click is
started before any is awaited: until 2026-12-08 this benchmark clicked them one after another, so
its earlier "four users" numbers are clicks beside the previous user's follow-up work, not four
at once): each one's click-to-overlay shows whether a request waits for other users' work beyond
their model runs. With ``--screenshots`` it also saves
the Segment, Attention and Correct tabs as small palette PNGs. The clicks on this checkout's app
are also split into stages (:mod:`benchmarks.app_stages`: request, decode, preprocessing,
model, overlay render, encode, transfer, browser draw), printed as a table and kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.app_stages import StageProbe, print_stage_table, stage_table

ROOT = Path(__file__).resolve().parents[1]
SCREEN = (1280, 900)


def checkpoint(args: argparse.Namespace, folder: Path) -> str:
    """The model to serve: ``--model``, or a ``--preset`` saved with its offline weights."""
    if args.model:
        return args.model
    import torch

    from sbanet import build_preset
    from sbanet.checkpoint import save_pretrained

    torch.manual_seed(0)
    model = build_preset(args.preset, pretrained=args.preset == "sbanet_lite").eval()
    return str(save_pretrained(model, folder / args.preset))


def small_png(source: Path, target: Path, width: int = 1100) -> Path:
    """A README-sized copy: at most ``width`` wide, 256-colour palette (a few hundred kB)."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(target, optimize=True)
    return target


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "all": [round(v, 3) for v in values],
    }


# Clicks Segment and resolves with the milliseconds until the next numbered result and its
# overlay image are on the page (measured in the page: several pages can be timed at once), and
# the epoch milliseconds of the click, of the result showing and of the overlay having loaded.
CLICK_AND_TIME = """async () => {
  const summary = () => document.querySelector('#segment-summary').innerText;
  const done = summary().match(/Result (\\d+):/);
  const expected = `Result ${done ? +done[1] + 1 : 1}:`;
  const epoch = () => performance.timeOrigin + performance.now();
  const started = performance.now();
  const click = epoch();
  let shown = null;
  document.querySelector('#segment-button').click();
  return await new Promise(resolve => {
    const check = () => {
      const image = document.querySelector('#overlay img');
      if (shown === null && summary().includes(expected)) shown = epoch();
      if (shown !== null && image && image.complete && image.naturalWidth > 0)
        resolve({ms: performance.now() - started, click: click, shown: shown, drawn: epoch()});
      else requestAnimationFrame(check);
    };
    check();
  });
}"""


def prepare(page: Any, url: str, image: Path, expressions: list[str]) -> Any:
    """Open the app, upload ``image``, type ``expressions`` and segment once (the warm-up)."""
    from annotate.app.browser import AppPage

    ui = AppPage(page, url)
    ui.open(annotator="benchmark")
    ui.segment(image, expressions)
    return ui


def click_to_overlay(ui: Any, probe: Any = None) -> tuple[float, dict[str, float] | None]:
    """One click's seconds until the overlay is drawn, and (with a ``probe`` on this process's
    app) its stages (:mod:`benchmarks.app_stages`)."""
    if probe is not None:
        probe.reset()
    timing = ui.page.evaluate(CLICK_AND_TIME)
    ui.wait_saved()
    stages = None
    if probe is not None:
        stages = probe.stages(timing["click"] / 1000.0, timing["shown"] / 1000.0, timing["drawn"] / 1000.0)
    return timing["ms"] / 1000.0, stages


# Schedules CLICK_AND_TIME for the epoch millisecond ``at`` and returns at once, its promise kept
# on the page: every page clicks at the same moment of the machine's clock, then each is awaited.
START_CLICK_AT = f"""at => {{
  window.sbanetClick = new Promise(go => setTimeout(go, Math.max(0, at - Date.now())))
    .then(() => ({CLICK_AND_TIME})());
}}"""


def concurrent_clicks(uis: list[Any], lead_s: float = 0.5) -> tuple[list[float], float]:
    """The pages of ``uis`` click Segment at the same moment (``lead_s`` from now): each one's
    click-to-overlay seconds, and the spread of the clicks (seconds from the first to the last)."""
    at = (time.time() + lead_s) * 1000.0
    for ui in uis:  # page.evaluate waits for a returned promise: schedule every click before awaiting one
        ui.page.evaluate(START_CLICK_AT, at)
    timings = [ui.page.evaluate("() => window.sbanetClick") for ui in uis]
    for ui in uis:
        ui.wait_saved()
    clicks = [t["click"] for t in timings]
    return [t["ms"] / 1000.0 for t in timings], (max(clicks) - min(clicks)) / 1000.0


def user_pages(browser: Any, url: str, image: Path, expressions: list[str], users: int) -> list[Any]:
    """``users`` pages on ``url``, each with ``image`` uploaded and segmented once (the warm-up)."""
    from annotate.app.browser import TIMEOUT_MS

    pages = [browser.new_page(viewport={"width": SCREEN[0], "height": SCREEN[1]}) for _ in range(users)]
    for page in pages:
        page.set_default_timeout(TIMEOUT_MS)
    try:
        return [prepare(page, url, image, expressions) for page in pages]
    except Exception:  # a failed warm-up leaves no page open behind it (the caller closes the rest)
        for page in pages:
            page.close()
        raise


def run(args: argparse.Namespace) -> dict[str, Any]:
    from annotate.app.browser import chromium_page
    from annotate.app.examples import example_inputs
    from annotate.app.launch import AppSettings, build_app, launch_kwargs

    with tempfile.TemporaryDirectory(prefix="sbanet-app-latency-") as tmp:
        folder = Path(tmp)
        example = example_inputs(folder / "examples")[args.example]
        image = Path(example.image)
        expressions = args.expression or example.expressions.splitlines()[:1]
        settings = AppSettings(
            model=checkpoint(args, folder), data_dir=str(folder / "data"), host="127.0.0.1", port=args.port
        )
        demo, backend = build_app(settings)
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(settings, backend))
        targets = {"this checkout": f"http://127.0.0.1:{demo.server_port}/"}
        targets.update(dict(item.split("=", 1) for item in args.against or []))
        results: dict[str, Any] = {}
        try:
            with chromium_page(*SCREEN) as page:
                browser = page.context.browser
                uis = {
                    name: prepare(
                        browser.new_page(viewport=dict(zip(("width", "height"), SCREEN))), url, image, expressions
                    )
                    for name, url in targets.items()
                }
                clicks: dict[str, list[float]] = {name: [] for name in targets}
                model: list[float] = []
                stages: list[dict[str, float]] = []
                probe = StageProbe(backend)
                try:
                    for _ in range(args.repeats):  # alternate: the machine's load falls on every target alike
                        for name, ui in uis.items():
                            seconds, parts = click_to_overlay(ui, probe if name == "this checkout" else None)
                            clicks[name].append(seconds)
                            if name == "this checkout":
                                text = ui.page.inner_text("#segment-summary")
                                model.append(float(re.search(r"([\d.]+) s model", text).group(1)))
                                stages += [parts] if parts is not None else []
                finally:
                    probe.close()
                if stages:
                    results["this checkout"] = {"stages_s": stage_table(stages, clicks["this checkout"])}
                    print_stage_table("this checkout", results["this checkout"]["stages_s"])
                for name in targets:
                    results.setdefault(name, {})["click_to_overlay_s"] = summary(clicks[name])
                if args.users > 1:
                    together_by_target(browser, targets, image, expressions, args, results)
                results["this checkout"]["model_s"] = summary(model)
                if args.screenshots:
                    screenshots(uis["this checkout"], Path(args.screenshots), folder, args.example, image)
        finally:
            demo.close()
            backend.store.close()
    return {
        "model": backend.model_name,
        "preset": backend.model.current()[0].config.name,
        "image": f"{image.name} (shipped example {args.example})",
        "expressions": expressions,
        "repeats": args.repeats,
        "users": args.users,
        "results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "load_average_after": os.getloadavg(),
        },
        "command": "python -m benchmarks.app_latency " + " ".join(sys.argv[1:]),
    }


def together_by_target(
    browser: Any, targets: dict[str, str], image: Path, expressions: list[str], args: argparse.Namespace, results: dict
) -> None:
    """``args.users`` fresh pages per target click at the same moment, ``args.user_rounds`` times,
    the targets alternating; each target's clicks pooled into one summary (and the click spread).
    Only one target's pages are open at a time (every open Gradio page costs the shared CPU), and
    each round starts ``args.settle`` s after its pages' warm-up clicks, on a server that has
    finished their follow-up work."""
    key = f"{args.users}_users_click_to_overlay_s"
    together: dict[str, list[float]] = {name: [] for name in targets}
    spread: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for _ in range(args.user_rounds):
            for name, url in targets.items():
                uis = user_pages(browser, url, image, expressions, args.users)
                try:
                    time.sleep(args.settle)
                    seconds, apart = concurrent_clicks(uis)
                finally:
                    for ui in uis:
                        ui.page.close()
                together[name] += seconds
                spread[name].append(apart)
    except Exception as exc:  # a benchmark keeps what it measured before a browser error
        for name in targets:
            results[name][f"{args.users}_users_error"] = f"{type(exc).__name__}: {exc}"[:300]
    for name in targets:
        if together[name]:
            results[name][key] = summary(together[name])
            results[name][f"{args.users}_users_click_spread_s"] = round(max(spread[name]), 3)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def screenshots(ui: Any, out: Path, folder: Path, example: int, image: Path) -> None:
    """The Segment tab after clicking a shipped example, the Attention tab, and the Correct tab
    with an add stroke across the middle of the first mask, README-sized."""
    import numpy as np

    raw = folder / "screenshots"
    ui.page.reload()
    ui.page.wait_for_selector("#segment-button")
    ui.page.locator("#examples img").nth(example).dispatch_event("click")
    ui.page.wait_for_function("() => /Result \\d+:/.test(document.querySelector('#segment-summary').innerText)")
    ui.wait_saved()
    ui.page.wait_for_timeout(1500)
    small_png(ui.screenshot(raw / "segment.png"), out / "segment.png")
    ui.tab("Attention")
    ui.wait_attention()
    ui.page.wait_for_timeout(1500)
    small_png(ui.screenshot(raw / "attention.png", full_page=True), out / "attention.png")
    canvas = ui.open_editor()
    state = canvas.state()
    width, height = state["width"], state["height"]
    ys = np.linspace(0.3, 0.7, 2) * height
    canvas.stroke([(0.3 * width, float(ys[0])), (0.6 * width, float(ys[1]))])
    small_png(ui.screenshot(raw / "correct.png"), out / "correct.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder or hub id to serve")
    source.add_argument("--preset", help="serve this preset (sbanet_lite: real encoders, random fusion)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--example", type=int, default=0, help="which shipped aerial example (0-3)")
    parser.add_argument("--expression", action="append", help="instead of the example's first (repeatable)")
    parser.add_argument("--users", type=int, default=4, help="pages clicking Segment at once (1: skip)")
    parser.add_argument("--user-rounds", type=int, default=3, help="times the --users pages click together")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between the warm-up and each round")
    parser.add_argument("--against", action="append", help="label=URL of another running app to measure too")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--screenshots", help="save README screenshots into this folder")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
