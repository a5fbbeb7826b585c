"""The mask canvas (``annotate/app/mask_canvas.py``) in a real browser (Debian's Chromium,
Playwright) on a laptop (1280x900) and a phone (390x844) viewport.

The canvas alone on a page (:func:`annotate.app.mask_canvas.canvas_page`): a *Load* button
(the scene and a starting mask), the ``region`` event wired to :mod:`annotate.edit.regions` and
a *Save* button that keeps the mask Python receives. Each tool is driven with the mouse and the
keyboard shortcuts: brush, eraser, size keys, opacity (the mask unchanged, its drawing changed),
wheel zoom about the pointer, pan, a polygon closed by snapping to its first vertex, a polygon
cut out with Enter, region add and remove, undo and redo. After each step the mask the canvas
shows (its layer's pixels, read back) is compared with the same edit computed here in numpy from
the points the canvas used; the saved mask must equal the shown one byte for byte. Every request
off the page's own server is refused and none may be made: the canvas runs offline.
"""

from __future__ import annotations

import numpy as np
import pytest
from app_server import BROWSER_TEST_MARKS, VIEWPORTS, free_port, scene_png
from PIL import Image

from annotate.app.browser import Canvas, chromium_page
from annotate.app.mask_canvas import canvas_page
from annotate.edit import regions, shapes

pytestmark = BROWSER_TEST_MARKS
HEIGHT, WIDTH = 240, 320


class CanvasPage(Canvas):
    """The test page's canvas, and its *Save* button."""

    def __init__(self, page, saved: list) -> None:
        super().__init__(page, "#canvas")
        self.saved = saved

    def region(self, x: int, y: int) -> None:  # in the mode picked with the keys
        loaded = self.loaded()
        self.click(x + 0.5, y + 0.5)
        self.wait_loaded(loaded)

    def save(self) -> np.ndarray:
        count = len(self.saved)
        self.page.click("#save")
        self.page.wait_for_function(f"() => document.querySelector('#info').innerText.includes('saved {count + 1}')")
        return self.saved[-1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("canvas")
    scene = np.asarray(Image.open(scene_png(folder / "scene.png", HEIGHT, WIDTH)).convert("RGB"))
    start = np.zeros((HEIGHT, WIDTH), bool)
    start[20:70, 30:110] = True  # the pond
    saved: list = []
    demo = canvas_page(scene, start, saved)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", scene, start, saved
    finally:
        demo.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_canvas_tool_in_a_real_browser(served, viewport):
    url, scene, start, saved = served
    with chromium_page(*VIEWPORTS[viewport]) as page:
        outside: list[str] = []  # offline: every request off the app's own server is refused
        page.route(
            "**/*",
            lambda r: r.continue_() if r.request.url.startswith(url) else outside.append(r.request.url) or r.abort(),
        )
        page.goto(url)
        page.click("#load")
        page.wait_for_function("() => document.querySelector('#canvas .mc-root')?.dataset.loaded === '1'")
        ui = CanvasPage(page, saved)
        assert np.array_equal(ui.shown(), start), "the canvas shows the mask it was given"
        assert np.array_equal(ui.save(), start)

        # brush and eraser (shortcuts B, E, ]), each compared with the path the canvas used
        ui.key("b")
        ui.stroke([(40, 150), (120, 160), (200, 150)])
        step = ui.log()[-1]
        mask = shapes.stroke(start, step["points"], step["size"], True)
        assert step["tool"] == "brush" and np.array_equal(ui.shown(), mask)
        assert mask[155, 60:180].all() and mask.sum() > start.sum()
        ui.key("e")
        for _ in range(3):
            ui.key("]")
        assert ui.state()["size"] == 18 and ui.state()["tool"] == "eraser"
        ui.stroke([(60, 20), (60, 100)])
        step = ui.log()[-1]
        before, mask = mask, shapes.stroke(mask, step["points"], 18, False)
        assert step["tool"] == "eraser" and np.array_equal(ui.shown(), mask) and not mask[25:65, 55:65].any()
        assert np.array_equal(ui.save(), mask), "saved = shown after brush and eraser"

        # opacity: the mask stays, only its drawing changes
        def pixel() -> list:  # the screen's colour over a mask pixel
            x, y = ui.screen(90.5, 40.5)
            box = page.locator("#canvas .mc-stage").bounding_box()
            return page.locator("#canvas .mc-screen").evaluate(
                "(c, p) => { const r = window.devicePixelRatio || 1, g = c.getContext('2d');"
                " return Array.from(g.getImageData(Math.floor(p[0] * r), Math.floor(p[1] * r), 1, 1).data); }",
                [x - box["x"], y - box["y"]],
            )

        low = pixel()
        for _ in range(6):
            ui.key(".")
        assert ui.state()["opacity"] == pytest.approx(0.75)
        high = pixel()
        assert high != low and np.array_equal(ui.shown(), mask), f"opacity {low} -> {high}, the mask unchanged"

        # wheel zoom about the pointer, then pan with H + drag; a stroke still lands where aimed
        ui.hover(160, 120)
        anchor = ui.screen(160, 120)
        scale = ui.state()["scale"]
        page.mouse.wheel(0, -300)
        page.wait_for_function(f"() => +document.querySelector('#canvas .mc-root').dataset.scale > {scale * 1.3}")
        after = ui.screen(160, 120)
        assert abs(after[0] - anchor[0]) < 1 and abs(after[1] - anchor[1]) < 1, "the point under the pointer stays"
        ui.key("h")
        pan = ui.state()
        page.mouse.move(*anchor)
        page.mouse.down()
        page.mouse.move(anchor[0] - 30, anchor[1] - 20, steps=3)
        page.mouse.up()
        moved = ui.state()
        assert moved["panX"] == pytest.approx(pan["panX"] - 30, abs=1)
        assert moved["panY"] == pytest.approx(pan["panY"] - 20, abs=1)
        assert np.array_equal(ui.shown(), mask), "panning draws nothing"
        ui.key("b")
        ui.stroke([(150, 110), (170, 110)])
        step = ui.log()[-1]
        assert abs(step["points"][0][0] - 150) < 0.5 / moved["scale"] + 0.01, "a zoomed stroke lands where aimed"
        mask = shapes.stroke(mask, step["points"], 18, True)
        assert np.array_equal(ui.shown(), mask)
        ui.key("0")
        assert ui.state()["scale"] == pytest.approx(scale)

        # polygon (P), closed by a click 4 screen pixels from its first vertex
        ui.key("p")
        corners = [(200.5, 30.5), (290.5, 30.5), (290.5, 90.5), (200.5, 90.5)]
        for x, y in corners:
            ui.click(x, y)
        assert ui.state()["points"] == 4 and np.array_equal(ui.shown(), mask), "vertices draw nothing yet"
        first = ui.screen(*corners[0])
        before = ui.revision()
        page.mouse.click(first[0] + 3, first[1] + 2.5)
        page.wait_for_function(f"() => +document.querySelector('#canvas .mc-root').dataset.revision > {before}")
        step = ui.log()[-1]
        mask = shapes.polygon(mask, step["points"], True)
        assert step["tool"] == "polygon" and len(step["points"]) == 4 and np.array_equal(ui.shown(), mask)
        assert mask[35:85, 205:285].all()
        # Auto (the default mode): a polygon mostly on the mask is cut out, with Enter
        assert ui.state()["mode"] == "auto"
        for x, y in [(220, 50), (260, 50), (260, 70), (220, 70)]:
            ui.click(x, y)
        before = ui.revision()
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => +document.querySelector('#canvas .mc-root').dataset.revision > {before}")
        step = ui.log()[-1]
        cut = shapes.polygon(mask, step["points"], False)
        assert step["value"] == 0 and np.array_equal(ui.shown(), cut) and not cut[52:68, 222:258].any()
        mask = cut

        # region (R) in Auto: a click on the mask (the pond) removes, one off it (the road) adds,
        # each = the library's edit, with no add/remove switch between them
        ui.key("r")
        ui.region(70, 45)
        expected = regions.toggle_region(mask, scene, (70, 45))
        assert np.array_equal(expected, regions.remove_region(mask, scene, (70, 45)))
        assert np.array_equal(ui.shown(), expected) and not np.array_equal(expected, mask)
        mask = expected
        ui.region(160, 200)
        expected = regions.toggle_region(mask, scene, (160, 200))
        assert np.array_equal(expected, regions.add_region(mask, scene, (160, 200)))
        assert np.array_equal(ui.shown(), expected) and expected[180:220, 153:167].mean() > 0.9
        mask = expected
        # X cycles Auto -> Add -> Remove -> Auto
        modes = []
        for _ in range(3):
            ui.key("x")
            modes.append(ui.state()["mode"])
        assert modes == ["add", "remove", "auto"]

        # undo / redo over the region edit (made in Python) and the polygon cut
        ui.key("Control+z")
        ui.key("Control+z")
        assert np.array_equal(ui.shown(), cut), "two undos take back both region edits"
        ui.key("Control+Shift+z")
        assert np.array_equal(ui.shown(), regions.remove_region(cut, scene, (70, 45)))
        ui.key("Control+y")
        assert np.array_equal(ui.shown(), mask)

        # a Shift-click takes medium superpixels, an Alt-click large ones, the Region choice untouched
        for modifier, scale in (("Shift", "medium"), ("Alt", "large")):
            loaded = ui.loaded()
            ui.click(280.5, 200.5, modifier)
            ui.wait_loaded(loaded)
            expected = regions.toggle_region(mask, scene, (280, 200), scale=scale)
            assert np.array_equal(ui.shown(), expected), f"{modifier}-click = {scale} region"
            assert not np.array_equal(expected, mask)
            mask = expected
        # a right drag with the brush erases (B picks the brush)
        ui.key("b")
        before = ui.revision()
        ui.stroke(((280.5, 200.5), (310.5, 200.5)), button="right")
        step = ui.log()[-1]
        mask = shapes.stroke(mask, step["points"], step["size"], False)
        assert step["tool"] == "eraser" and np.array_equal(ui.shown(), mask) and ui.revision() > before
        # with the region tool (R) a drag paints like the brush and a right drag erases: no tool switch
        ui.key("r")
        for button, add in (("left", True), ("right", False)):
            ui.stroke(((20.5, 200.5), (60.5, 210.5)), button=button)
            step = ui.log()[-1]
            mask = shapes.stroke(mask, step["points"], step["size"], add)
            assert step["value"] == int(add) and np.array_equal(ui.shown(), mask), f"a {button} drag"
        assert ui.state()["tool"] == "region"

        shown = ui.shown()
        saved_mask = ui.save()
        assert np.packbits(saved_mask).tobytes() == np.packbits(shown).tobytes(), "saved = what the canvas shows"
        width = VIEWPORTS[viewport][0]
        assert not outside, f"the page asked for {outside}"
        overflow = page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= width, "the canvas pushes the page sideways"


def test_touch_one_finger_draws_two_fingers_pinch(served):
    """On a touch screen (390x844): a one-finger stroke paints, a tap puts a polygon vertex, two
    fingers spread apart zoom about their midpoint and take back nothing drawn before."""
    url, _, start, saved = served
    with chromium_page(*VIEWPORTS["phone"], touch=True) as page:
        page.goto(url)
        page.click("#load")
        page.wait_for_function("() => document.querySelector('#canvas .mc-root')?.dataset.loaded >= 1")
        ui = CanvasPage(page, saved)
        ui.into_view()
        touch = page.context.new_cdp_session(page)

        def fingers(kind: str, *points) -> None:
            spots = [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": spots})

        before = ui.revision()
        a, b = ui.screen(40, 150), ui.screen(200, 150)
        fingers("touchStart", a)
        for t in np.linspace(0, 1, 6)[1:]:
            fingers("touchMove", (a[0] + t * (b[0] - a[0]), a[1]))
        fingers("touchEnd")
        ui.wait_revision(before)
        step = ui.log()[-1]
        mask = shapes.stroke(start, step["points"], step["size"], True)
        assert step["tool"] == "brush" and np.array_equal(ui.shown(), mask) and mask[150, 60:180].all()

        # two fingers: zoom x2 about their midpoint; the image point there stays under it
        state = ui.state()
        middle = ui.screen(160, 120)
        left, right = (middle[0] - 40, middle[1]), (middle[0] + 40, middle[1])
        fingers("touchStart", left, right)
        for t in np.linspace(0, 1, 6)[1:]:
            fingers("touchMove", (left[0] - 40 * t, left[1]), (right[0] + 40 * t, right[1]))
        fingers("touchEnd")
        zoomed = ui.state()
        assert zoomed["scale"] == pytest.approx(2 * state["scale"], rel=0.02)
        after = ui.screen(160, 120)
        assert abs(after[0] - middle[0]) < 1.5 and abs(after[1] - middle[1]) < 1.5
        assert np.array_equal(ui.shown(), mask) and zoomed["revision"] == state["revision"], "the pinch draws nothing"

        # a tap with the polygon tool puts a vertex (on lifting the finger)
        page.locator("#canvas button[data-tool=polygon]").tap()
        spot = ui.screen(150, 100)
        fingers("touchStart", spot)
        fingers("touchEnd")
        assert ui.state()["points"] == 1
