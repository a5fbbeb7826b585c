"""How long a Segment click takes in a real browser, and the README's screenshots.

    python -m benchmarks.app_latency --model sbanet/assets/sbanet-lite-dubai --repeats 5 \\
        --json benchmarks/results/app_latency.json --screenshots docs/screenshots
    python -m benchmarks.app_latency --preset sbanet_lite      # random weights: the same cost

The app is built exactly as ``app.py`` builds it (fresh store in a temporary folder) and served on
loopback; Debian's Chromium, driven by Playwright (:mod:`annotate.browser`), uploads a generated
synthetic scene, types its expressions and clicks Segment ``repeats`` times (after one warm-up
click). Each time counts from the click until the overlay image has loaded in the page: request,
queue, model, overlays, probability maps, mask files, the store write, transfer and drawing. The
model's own share, and the handler's (reading the upload to writing the store), are what the app
prints under the overlay; the rest is Gradio's queue, encoding and transfer, and the browser.
With ``--screenshots`` it also saves the Segment, Attention and Correct tabs as small palette PNGs.
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
from pathlib import Path
from typing import Any

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from annotate.browser import AppPage, chromium_page
    from annotate.examples import example_inputs
    from annotate.launch import AppSettings, build_app, launch_kwargs

    with tempfile.TemporaryDirectory(prefix="sbanet-app-latency-") as tmp:
        folder = Path(tmp)
        expressions = args.expression or scene_defaults(args.seed)
        scene, _ = example_inputs(folder / "examples", [(args.seed, expressions)])[0]
        settings = AppSettings(
            model=checkpoint(args, folder), data_dir=str(folder / "data"), host="127.0.0.1", port=args.port
        )
        demo, backend = build_app(settings)
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(settings, backend))
        try:
            url = f"http://127.0.0.1:{demo.server_port}/"
            with chromium_page(*SCREEN) as page:
                ui = AppPage(page, url)
                ui.open(annotator="benchmark")
                ui.segment(scene, expressions)  # warm-up: first-use costs are not what users feel each time
                clicks, model, handler = [], [], []
                for _ in range(args.repeats):
                    clicks.append(ui.segment(None, expressions))
                    text = page.inner_text("#segment-summary")
                    model.append(float(re.search(r"([\d.]+) s model", text).group(1)))
                    handler.append(float(re.search(r"([\d.]+) s in all", text).group(1)))
                if args.screenshots:
                    screenshots(ui, Path(args.screenshots), folder, args.seed)
        finally:
            demo.close()
            backend.store.close()
    return {
        "model": backend.model_name,
        "preset": backend.model.current()[0].config.name,
        "image": f"synthetic scene, seed {args.seed}, 448 x 448",
        "expressions": expressions,
        "repeats": args.repeats,
        "click_to_overlay_s": summary(clicks),
        "model_s": summary(model),
        "handler_s": summary(handler),  # reading the upload .. the store write, in the server
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "command": "python -m benchmarks.app_latency " + " ".join(sys.argv[1:]),
    }


def scene_defaults(seed: int, count: int = 3) -> list[str]:
    """The first ``count`` expressions of synthetic scene ``seed``, class-level ones ("the
    buildings", "every road") first: what the benchmark types when no --expression is given."""
    from sbanet.data.synthetic import scene_expressions

    referrings = scene_expressions(seed)
    ordered = [r for r in referrings if r.rule == "class"] + [r for r in referrings if r.rule != "class"]
    return [r.expression for r in ordered[:count]]


def screenshots(ui: Any, out: Path, folder: Path, seed: int) -> None:
    """The Segment, Attention and Correct tabs of the last segmentation, README-sized; the
    Correct tab with a stroke painted across what the first expression names."""
    import numpy as np

    from sbanet.data.synthetic import scene_expressions

    raw = folder / "screenshots"
    small_png(ui.screenshot(raw / "segment.png"), out / "segment.png")
    ui.tab("Attention")
    ui.wait_attention()
    ui.page.wait_for_timeout(1000)
    small_png(ui.screenshot(raw / "attention.png", full_page=True), out / "attention.png")
    ui.open_editor()
    ui.page.locator("#mask-editor").scroll_into_view_if_needed()
    target = scene_expressions(seed)[0].mask
    ys, xs = np.nonzero(target)
    row = float(np.median(ys))
    ui.stroke([(float(xs.min()) + 6, row), (float(xs.max()) - 6, row)], target.shape)
    small_png(ui.screenshot(raw / "correct.png"), out / "correct.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder or hub id to serve")
    source.add_argument("--preset", help="serve this preset (sbanet_lite: real encoders, random fusion)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="which synthetic example scene")
    parser.add_argument("--expression", action="append", help="instead of the scene's expressions (repeatable)")
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
