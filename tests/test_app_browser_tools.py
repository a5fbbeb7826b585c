"""The Correct tab's mask canvas and tools in the real app, in a real browser (Debian's Chromium,
Playwright), on a laptop and on a phone viewport: region clicks on the canvas (small superpixels,
large ones, the model's map) adding and removing, a polygon closed by snapping to its first
vertex, a polygon cut out with Enter, fill holes, remove specks, undo / redo of each (the
region and fill tools' edits included), a brush stroke, the opacity (the mask unchanged), wheel
zoom, and a save.

After every step the mask the canvas shows (its layer's pixels, read back) is compared with the
tool's own function applied to the mask shown before (brush and polygon: computed here from the
points the canvas used); the saved mask must be exactly the one shown, byte for byte.
Screenshots go to ``$SBANET_TEST_ARTIFACTS/browser/tools-*.png``.
"""

from __future__ import annotations

import numpy as np
import pytest
from app_server import BROWSER_TEST_MARKS, VIEWPORTS, running_app, scene_png
from PIL import Image
from test_app_browser import artifacts

from annotate.app.browser import AppPage, chromium_page
from annotate.edit import regions, shapes
from annotate.store import repository as repo

pytestmark = BROWSER_TEST_MARKS
HEIGHT, WIDTH = 360, 480


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_mask_tool_in_a_real_browser(tmp_path, viewport):
    image = scene_png(tmp_path / "scene.png", HEIGHT, WIDTH)
    scene = np.asarray(Image.open(image).convert("RGB"))
    road = np.zeros((HEIGHT, WIDTH), bool)
    road[60:140, 153:167] = True  # inside the grey road (columns 150-170), away from its edges
    with running_app(tmp_path) as app, chromium_page(*VIEWPORTS[viewport]) as page:
        ui = AppPage(page, app.url)
        ui.open(annotator=f"tools-{viewport}")
        ui.keep_untrusted()
        ui.segment(image, ["the pond"])
        canvas = ui.open_editor()
        with app.backend.store.ReadSession() as session:
            parent = repo.review_queue(session, "draft", "recent", 10)[0]
            parent_id, expression_id, base = parent.id, parent.expression_id, repo.mask_array(parent)
        assert np.array_equal(canvas.shown(), base), "the canvas shows the stored mask"

        # region clicks on the canvas: exactly the library's edit at the pixel clicked
        mask = canvas.region(160, 100, add=True)
        assert np.array_equal(mask, regions.add_region(base, scene, (160, 100)))
        assert mask[road].mean() >= 0.9, "the clicked road is in the mask"
        before, mask = mask, canvas.region(160, 100, add=False)
        assert np.array_equal(mask, regions.remove_region(before, scene, (160, 100)))
        assert mask[road].mean() <= 0.1 and not (mask & ~before).any(), "the road is out, nothing added"
        large = regions.superpixels(scene, regions.SCALES["large"].area)
        probability = app.backend.predict(scene, ["the pond"])[0][0].probability
        for source, options in [
            ("Large (lakes, sand)", {"scale": "large", "pixels": large}),
            ("Model's map", {"method": "model", "probability": probability}),
        ]:
            canvas.pick(source)
            start, mask = mask, canvas.region(160, 100, add=True)
            assert np.array_equal(mask, regions.add_region(start, scene, (160, 100), **options)), source
            if not np.array_equal(mask, start):
                canvas.key("Control+z")
                mask = canvas.shown()
                assert np.array_equal(mask, start), f"Ctrl+Z takes the {source} region back"
        canvas.pick("Small (roofs)")

        # polygon: snapped shut on its first vertex, then one cut out with Enter
        canvas.key("p")
        canvas.tool("add")
        corners = [(200.5, 200.5), (300.5, 200.5), (300.5, 280.5), (200.5, 280.5)]
        for x, y in corners:
            canvas.click(x, y)
        assert canvas.state()["points"] == 4 and np.array_equal(canvas.shown(), mask)
        first = canvas.screen(*corners[0])
        revision = canvas.revision()
        page.mouse.click(first[0] + 3, first[1] + 3)  # 4.2 screen pixels from the first vertex
        canvas.wait_revision(revision)
        step = canvas.log()[-1]
        before, mask = mask, shapes.polygon(mask, step["points"], True)
        assert step["tool"] == "polygon" and np.array_equal(canvas.shown(), mask)
        assert mask[203:278, 203:298].all() and np.array_equal(mask[:, :190], before[:, :190])
        canvas.key("x")
        for x, y in [(230, 220), (260, 220), (260, 250), (230, 250)]:
            canvas.click(x, y)
        revision = canvas.revision()
        page.keyboard.press("Enter")
        canvas.wait_revision(revision)
        mask = shapes.polygon(mask, canvas.log()[-1]["points"], False)
        assert np.array_equal(canvas.shown(), mask) and not mask[223:248, 233:258].any()

        # fill holes and remove specks: the library's functions on the mask shown
        page.fill("#hole-area input", "5000")
        before, mask = mask, canvas.button("#fill-holes")
        assert np.array_equal(mask, shapes.fill_holes(before, 5000)) and mask[223:248, 233:258].all()
        page.fill("#speck-area input", "20000")
        filled, mask = mask, canvas.button("#remove-specks")
        assert np.array_equal(mask, shapes.remove_specks(filled, 20000)) and not mask[203:278, 203:298].any()
        canvas.key("Control+z")
        assert np.array_equal(canvas.shown(), filled), "undo brings the specks back"
        canvas.key("Control+z")
        assert np.array_equal(canvas.shown(), before), "a second undo reopens the hole"
        canvas.key("Control+y")
        mask = canvas.shown()
        assert np.array_equal(mask, filled), "redo fills it again"

        # a brush stroke, then the opacity and a zoom: the mask stays as drawn
        canvas.key("b")
        canvas.stroke(((0.05 * WIDTH, 0.92 * HEIGHT), (0.25 * WIDTH, 0.92 * HEIGHT)))
        step = canvas.log()[-1]
        mask = shapes.stroke(mask, step["points"], step["size"], True)
        assert np.array_equal(canvas.shown(), mask)
        page.locator("#mask-editor .mc-opacity").evaluate(
            "e => { e.value = '0.9'; e.dispatchEvent(new Event('input', { bubbles: true })); }"
        )
        assert canvas.state()["opacity"] == pytest.approx(0.9) and np.array_equal(canvas.shown(), mask)
        scale = canvas.state()["scale"]
        canvas.hover(WIDTH / 2, HEIGHT / 2)
        page.mouse.wheel(0, -200)
        page.wait_for_function(f"() => +document.querySelector('#mask-editor .mc-root').dataset.scale > {scale}")
        assert np.array_equal(canvas.shown(), mask)
        canvas.key("0")
        ui.screenshot(artifacts() / f"tools-{viewport}.png")

        shown = canvas.shown()
        message = ui.save_correction()
        new_id = int(message.split("mask version ")[1].split()[0])
        with app.backend.store.ReadSession() as session:
            saved = repo.latest_mask(session, expression_id)
            stored = repo.mask_array(saved)
        assert saved.id == new_id and saved.parent_id == parent_id
        assert stored.shape == (HEIGHT, WIDTH)
        assert np.packbits(stored).tobytes() == np.packbits(shown).tobytes(), "saved = what the canvas shows"
        width = VIEWPORTS[viewport][0]
        overflow = page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= width, "the canvas pushes the page sideways"
