"""Drive the app in a real Chromium with Playwright: the browser test, the latency benchmark
(``benchmarks/app_latency.py``) and the README screenshots use these steps.

Playwright is a development dependency and is imported only here, inside functions; Chromium is
Debian's (``$SBANET_CHROMIUM`` or ``/usr/bin/chromium``) since ``playwright install`` needs a
download. Coordinates on the mask canvas are computed from the zoom and pan it reports
(:class:`Canvas`).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    """A TCP port free on loopback now, for an app a test or benchmark launches."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    return path if Path(path).is_file() else None


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000, touch: bool = False) -> Iterator[Any]:
    """A fresh headless Chromium page (closed, with its browser, afterwards); ``touch``: a touch
    screen (touch events and ``pointerType`` "touch")."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise ValueError(f"no Chromium at ${CHROMIUM_ENV} or {DEFAULT_CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, has_touch=touch)
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
            # Gradio shows the name's stem and extension as two elements, which innerText may put
            # on two lines ("dubai-tile6-001\n.jpg"): compare without white space
            try:
                page.wait_for_function(
                    "name => { const flat = t => t.replace(/\\s+/g, '');"
                    " return flat(document.querySelector('#upload').innerText).includes(flat(name)); }",
                    arg=Path(image).name,
                )
            except Exception as exc:  # say what the upload showed instead
                shown = page.inner_text("#upload")[:300].replace("\n", " | ")
                raise TimeoutError(f"the upload never showed {Path(image).name!r}; it shows: {shown!r}") from exc
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

    def open_editor(self, mask_version: int | None = None) -> Canvas:
        """Open a mask version (default: the one the Correct tab proposes) in the mask canvas;
        the canvas, once it shows the picture and the mask."""
        page = self.page
        self.tab("Correct")
        if mask_version is not None:
            page.fill("#mask-version input", str(mask_version))
        else:  # the Correct tab proposes the last segmentation's draft once it is saved
            page.wait_for_function("() => document.querySelector('#mask-version input').value !== ''")
        canvas = Canvas(page, "#mask-editor")
        loaded = canvas.loaded()
        self.press("#open-button")  # one click: an empty-looking box opens the proposal (review.open_from_session)
        page.wait_for_function("() => /mask version \\d+/.test(document.querySelector('#item-info').innerText)")
        canvas.wait_loaded(loaded)
        canvas.into_view()
        return canvas

    def save_correction(self) -> str:
        self.press("#save-button")
        self.page.wait_for_function("() => /Saved/.test(document.querySelector('#save-info').innerText)")
        return self.page.inner_text("#save-info")

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


class Canvas:
    """The mask canvas (:func:`annotate.app.mask_canvas.mask_canvas`) under ``selector``, driven
    with the mouse and keys as a user would; what it shows is read from its layer's pixels."""

    def __init__(self, page: Any, selector: str) -> None:
        self.page, self.selector = page, selector
        self.root = page.locator(f"{selector} .mc-root")

    def state(self) -> dict:
        return self.root.evaluate("r => r.maskCanvas.state()")

    def loaded(self) -> int:
        """How many values from Python the canvas has taken so far."""
        return int(self.root.get_attribute("data-loaded") or 0)

    def wait_loaded(self, before: int) -> None:
        """Until the canvas has taken a value after the ``before``-th and is not busy."""
        self.page.wait_for_function(
            "([s, n]) => { const r = document.querySelector(s + ' .mc-root');"
            " return +(r.dataset.loaded || 0) > n && r.dataset.busy === '0'; }",
            arg=[self.selector, before],
        )

    def shown(self) -> Any:
        """The mask the canvas shows ``bool [h, w]``: its layer's pixels, read back."""
        import numpy as np

        state = self.state()
        bits = self.root.evaluate("r => r.maskCanvas.shown()")
        return np.frombuffer(bits.encode(), np.uint8).reshape(state["height"], state["width"]) == ord("1")

    def log(self) -> list:
        """What each edit did: tool, value, size and the points it used (canvas pixels)."""
        return self.root.evaluate("r => r.maskCanvas.log()")

    def into_view(self) -> None:
        """Scroll the drawing area into the middle of the window (the mouse acts only where the
        page is shown), unless it is wholly shown already."""
        self.page.locator(f"{self.selector} .mc-stage").evaluate(
            "e => { const r = e.getBoundingClientRect();"
            " if (r.top < 0 || r.bottom > window.innerHeight) e.scrollIntoView({block: 'center'}); }"
        )

    def screen(self, x: float, y: float) -> tuple[float, float]:
        """Page coordinates of canvas point (x, y) at the zoom and pan the canvas shows."""
        box = self.page.locator(f"{self.selector} .mc-stage").bounding_box()
        s = self.state()
        return box["x"] + s["panX"] + x * s["scale"], box["y"] + s["panY"] + y * s["scale"]

    def hover(self, x: float, y: float) -> None:
        self.into_view()
        self.page.mouse.move(*self.screen(x, y))

    def key(self, key: str) -> None:
        """Press a shortcut with the pointer over the canvas's middle and the focus on it (a
        number box still focused would take the key, as it should)."""
        state = self.state()
        self.hover(state["width"] / 2, state["height"] / 2)
        self.root.focus()
        self.page.keyboard.press(key)

    def tool(self, name: str) -> None:
        """Pick a tool or a mode with its toolbar button (``brush``, ..., ``auto``, ``add``, ``remove``)."""
        kind = "mode" if name in ("auto", "add", "remove") else "tool"
        self.page.locator(f"{self.selector} button[data-{kind}={name}]").click()

    def revision(self) -> int:
        return int(self.state()["revision"])

    def wait_revision(self, before: int) -> None:
        self.page.wait_for_function(
            "([s, n]) => +document.querySelector(s + ' .mc-root').dataset.revision > n", arg=[self.selector, before]
        )

    def stroke(self, points: Sequence[tuple[float, float]], button: str = "left") -> None:
        """Drag through canvas points with the tool picked (brush or eraser; the ``"right"``
        button does the other one)."""
        before = self.revision()
        self.into_view()
        self.page.mouse.move(*self.screen(*points[0]))
        self.page.mouse.down(button=button)
        for x, y in points[1:]:
            self.page.mouse.move(*self.screen(x, y), steps=4)
        self.page.mouse.up(button=button)
        self.wait_revision(before)

    def set_size(self, size: int) -> None:
        """Set the brush size slider (what dragging it does)."""
        self.page.locator(f"{self.selector} .mc-size").evaluate(
            f"e => {{ e.value = '{int(size)}'; e.dispatchEvent(new Event('input', {{ bubbles: true }})); }}"
        )

    def click(self, x: float, y: float, modifier: str | None = None) -> None:
        """A click at canvas point (x, y), with ``modifier`` (``"Shift"``, ``"Alt"``, ``"Control"``) held."""
        self.into_view()
        if modifier:
            self.page.keyboard.down(modifier)
        try:
            self.page.mouse.click(*self.screen(x, y))
        finally:
            if modifier:
                self.page.keyboard.up(modifier)

    def region(self, x: int, y: int, add: bool | None = True, modifier: str | None = None) -> Any:
        """A region click at pixel (x, y) (its centre), adding, removing or (``add=None``) in the
        *Auto* mode, where the clicked pixel decides, with ``modifier`` held (Shift: medium
        regions, Alt: large, Control: the model's map); the mask shown after Python's answer."""
        if self.state()["tool"] != "region":
            self.tool("region")
        mode = "auto" if add is None else "add" if add else "remove"
        if self.state()["mode"] != mode:
            self.tool(mode)
        loaded = self.loaded()
        self.click(x + 0.5, y + 0.5, modifier)
        self.wait_loaded(loaded)
        return self.shown()

    def button(self, selector: str) -> Any:
        """Click a page button whose handler answers the canvas (fill holes, remove specks);
        the mask shown after."""
        loaded = self.loaded()
        self.page.locator(selector).first.dispatch_event("click")
        self.wait_loaded(loaded)
        return self.shown()

    def pick(self, label: str, group: str = "#region-source") -> None:
        """Choose ``label`` in a radio group of the page."""
        self.page.locator(f"{group} label", has_text=label).first.click()
