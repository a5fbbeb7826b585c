"""Drive the app in a real Chromium with Playwright: the browser test, the latency benchmark
(``benchmarks/app_latency.py``) and the README screenshots use these steps.

Playwright is a development dependency and is imported only here, inside functions; Chromium is
Debian's (``$SBANET_CHROMIUM`` or ``/usr/bin/chromium``) since ``playwright install`` needs a
download. Coordinates on the editor's canvas are computed from the zoom it shows: the image is
centred in the canvas at that scale.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .render import BRUSH_ADD, BRUSH_REMOVE, hex_to_rgb

CHROMIUM_ENV = "SBANET_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    return path if Path(path).is_file() else None


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A fresh headless Chromium page (closed, with its browser, afterwards)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise ValueError(f"no Chromium at ${CHROMIUM_ENV} or {DEFAULT_CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


class AppPage:
    """The app's page, step by step, as a user would use it."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url

    def open(self, annotator: str | None = None) -> None:
        self.page.goto(self.url)
        self.page.wait_for_selector("#segment-button")
        if annotator:
            self.page.locator("#annotator textarea, #annotator input").first.fill(annotator)

    def keep_untrusted(self) -> None:
        """Tick Options → "Save 'nothing found' results as drafts too" (a random-weight model's
        masks are often empty, and the app does not queue those otherwise)."""
        self.page.get_by_text("Options", exact=True).first.dispatch_event("click")
        self.page.locator("#keep-untrusted input[type=checkbox]").check()

    def press(self, selector: str) -> None:
        """Click a button by dispatching the event: Playwright's actionability checks wait for
        animation frames, which a software-rendered WebGL canvas makes slow on a busy machine."""
        self.page.locator(selector).first.dispatch_event("click")

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).dispatch_event("click")

    def segment(self, image: str | Path | None, expressions: Sequence[str]) -> float:
        """Upload (None: keep the uploaded image), type, click Segment; returns the seconds from
        the click until the next numbered result's summary shows and its overlay has loaded
        (then waits until the drafts are saved and the probability maps shown)."""
        page = self.page
        if image is not None:
            page.set_input_files("#upload input[type=file]", str(image))
            page.wait_for_function(
                "name => document.querySelector('#upload').innerText.includes(name)", arg=Path(image).name
            )
        page.fill("#expressions textarea", "\n".join(expressions))
        done = re.search(r"Result (\d+):", page.inner_text("#segment-summary"))
        expected = f"Result {int(done.group(1)) + 1 if done else 1}:"  # the summary numbers the runs
        started = time.perf_counter()
        self.press("#segment-button")
        page.wait_for_function(
            "expected => { const s = document.querySelector('#segment-summary').innerText;"
            " const i = document.querySelector('#overlay img');"
            " return s.includes(expected) && i && i.complete && i.naturalWidth > 0; }",
            arg=expected,
        )
        seconds = time.perf_counter() - started
        self.wait_saved()
        return seconds

    def wait_saved(self) -> None:
        """Until the second step of a segmentation is done (drafts saved, maps and files shown)."""
        self.page.wait_for_function(
            "() => { const s = document.querySelector('#segment-summary').innerText;"
            " return /Result \\d+:/.test(s) && !s.includes('saving…'); }"
        )

    def wait_attention(self) -> None:
        for selector in ("#query-map img", "#word-bars img"):
            self.page.wait_for_selector(selector)

    def open_editor(self, mask_version: int | None = None) -> float:
        """Open a mask version (default: the one the Correct tab proposes); returns the zoom."""
        page = self.page
        self.tab("Correct")
        if mask_version is not None:
            page.fill("#mask-version input", str(mask_version))
        else:  # the Correct tab proposes the last segmentation's draft once it is saved
            page.wait_for_function("() => document.querySelector('#mask-version input').value !== ''")
        self.press("#open-button")  # one click: an empty-looking box opens the proposal (review.open_from_session)
        page.wait_for_function("() => /mask version \\d+/.test(document.querySelector('#item-info').innerText)")
        page.wait_for_selector("#mask-editor canvas")
        page.wait_for_function("() => /\\d+%/.test(document.querySelector('#mask-editor').innerText)")
        page.wait_for_timeout(1500)  # the background texture is drawn after the zoom shows
        # the whole canvas in the viewport: the mouse only paints where the page is shown
        page.locator("#mask-editor").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        return self.zoom()

    def zoom(self) -> float:
        match = re.search(r"(\d+)%", self.page.inner_text("#mask-editor"))
        if match is None:
            raise ValueError("the editor shows no zoom level")
        return int(match.group(1)) / 100.0

    def screen_mapping(self, image_size: tuple[int, int]) -> Any:
        """A function image pixel ``(x, y)`` -> page coordinates (the image is centred in the
        canvas at the zoom the editor shows); measured once, valid until the view changes."""
        box = self.page.locator("#mask-editor canvas").first.bounding_box()
        scale = self.zoom()
        height, width = image_size
        centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

        def to_screen(x: float, y: float) -> tuple[float, float]:
            return centre_x + (x - width / 2) * scale, centre_y + (y - height / 2) * scale

        return to_screen

    def stroke(self, points: Sequence[tuple[float, float]], image_size: tuple[int, int], remove: bool = False) -> None:
        """Paint through image points with the add (or remove) brush. The brush starts only once
        it has seen the pointer over the image, and draws a straight segment between pointer
        events, so one move per point is a straight stroke."""
        page = self.page
        self.press("#mask-editor button[aria-label=Brush]")
        self.press("#mask-editor button[aria-label=Color]")
        r, g, b = hex_to_rgb(BRUSH_REMOVE if remove else BRUSH_ADD)
        self.press(f"#mask-editor button.color[style*='rgb({r}, {g}, {b})']")
        to_screen = self.screen_mapping(image_size)
        page.mouse.move(*to_screen(*points[0]))
        page.wait_for_timeout(250)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(*to_screen(x, y))
        page.mouse.up()
        page.wait_for_timeout(250)

    def save_correction(self) -> str:
        self.press("#save-button")
        self.page.wait_for_function("() => /Saved/.test(document.querySelector('#save-info').innerText)")
        return self.page.inner_text("#save-info")

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


# page coordinates of a pixel (x, y) of the tools' picture, mapped as Gradio maps a click back
TOOL_VIEW_TO_SCREEN = """([x, y]) => {
  const img = document.querySelector('#tool-view img');
  const r = img.getBoundingClientRect();
  const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
  const left = r.left + (r.width - img.naturalWidth * s) / 2, top = r.top + (r.height - img.naturalHeight * s) / 2;
  return [left + x * s, top + y * s];
}"""


class MaskTools:
    """The Correct tab's mask tools on the page, and the mask the page shows: the tools' picture
    (a lossless PNG of the editor's background) differs from the scene exactly where the mask is
    tinted in. ``scene``: the picture without the mask ``uint8 [H, W, 3]``."""

    def __init__(self, ui: AppPage, scene: Any) -> None:
        self.ui, self.page, self.scene = ui, ui.page, scene
        self.seen, self.src = "", ""

    def shown(self) -> Any:
        """The mask the page shows ``bool [H, W]``."""
        import io

        import numpy as np
        from PIL import Image

        src = self.src = self.page.locator("#tool-view img").first.get_attribute("src")
        picture = np.asarray(Image.open(io.BytesIO(self.page.request.get(src).body())).convert("RGB"))
        if picture.shape != self.scene.shape:
            raise ValueError(f"the tools' picture is {picture.shape}, the scene {self.scene.shape}")
        return (picture != self.scene).any(-1)

    def ready(self) -> Any:
        """Once the tools' picture has loaded after opening: the mask it shows."""
        self.page.wait_for_function("() => document.querySelector('#tool-view img')?.naturalWidth > 0")
        self.seen = self.page.inner_text("#tool-info")
        return self.shown()

    def wait(self, expected: str) -> Any:
        """Until the tool's message has changed and says ``expected`` and a new picture has
        loaded (every step that changes the mask sends one; an unchanged picture keeps its
        address); the mask shown then."""
        self.page.wait_for_function(
            "([seen, expected, src]) => { const t = document.querySelector('#tool-info').innerText;"
            " const i = document.querySelector('#tool-view img');"
            " return t !== seen && t.includes(expected) && i"
            " && (i.getAttribute('src') !== src || t.includes('nothing changed'))"
            " && i.complete && i.naturalWidth > 0; }",
            arg=[self.seen, expected, self.src],
        )
        self.seen = self.page.inner_text("#tool-info")
        return self.shown()

    def pick(self, tool: str, group: str = "#click-tool") -> None:
        """Choose ``tool`` in a radio group (``#click-tool`` or ``#region-source``)."""
        self.page.locator(f"{group} label", has_text=tool).first.click()

    def click(self, x: float, y: float, expected: str) -> Any:
        self.page.locator("#tool-view img").first.scroll_into_view_if_needed()
        self.page.mouse.click(*self.page.evaluate(TOOL_VIEW_TO_SCREEN, [x, y]))
        return self.wait(expected)

    def button(self, selector: str, expected: str) -> Any:
        self.ui.press(selector)
        return self.wait(expected)
