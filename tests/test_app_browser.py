"""The app in a real browser: Debian's Chromium driven by Playwright.

Covers a user's whole loop on the real app (tiny model, real store): upload an image, type an
expression, click Segment and see the overlay, open the Attention tab and see its pictures,
open the predicted mask in the mask canvas, paint a brush stroke and an eraser stroke with the
mouse, save, and then find in the store the exact mask those strokes make (computed here from the
points the canvas used), at the image's full resolution, equal to the one the canvas shows.
Screenshots of each step go to ``$SBANET_TEST_ARTIFACTS/browser`` (default
``test-artifacts/browser``), with the measured Segment click latency in ``timings.json``.

Also: the first screen on a phone (390×844: the title is not squeezed, the upload is on the first
screen, every tab is reachable, *Use via API* stays) and on a laptop (1440×900: Segment and the
examples above the fold), the canvas's keyboard shortcuts and the page's Ctrl+S, and the toast
and header after a save.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from app_server import BROWSER_TEST_MARKS, running_app, scene_png

from annotate.app.browser import AppPage, chromium_page
from annotate.edit import shapes
from annotate.store import repository as repo

pytestmark = BROWSER_TEST_MARKS
ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 360, 480


def artifacts() -> Path:
    folder = Path(os.environ.get("SBANET_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_segment_inspect_correct_and_save_in_a_real_browser(tmp_path):
    out = artifacts()
    image = scene_png(tmp_path / "scene.png", HEIGHT, WIDTH)
    steps: dict[str, float] = {}
    clock = [time.perf_counter()]

    def done(step: str) -> None:
        steps[step] = round(time.perf_counter() - clock[0], 2)
        clock[0] = time.perf_counter()

    with running_app(tmp_path) as app, chromium_page(1100, 850) as page:
        done("start app and browser")
        ui = AppPage(page, app.url)
        ui.open(annotator="browser-tester")
        ui.keep_untrusted()  # the random tiny model's mask may be empty: save it as a draft anyway
        done("load page")
        seconds = ui.segment(image, ["the pond"])
        assert "the pond" in page.inner_text("#overlay")
        assert "mask version" in page.inner_text("#segment-summary")
        ui.screenshot(out / "1-segment.png", full_page=True)
        done("segment")

        ui.tab("Attention")
        ui.wait_attention()
        assert page.locator("#query-map img").first.evaluate("i => i.naturalWidth") > 400
        ui.screenshot(out / "2-attention.png", full_page=True)
        done("attention")

        with app.backend.store.ReadSession() as session:
            predicted = repo.review_queue(session, "draft", "recent", 10)[0]
            parent_id, expression_id, base = predicted.id, predicted.expression_id, repo.mask_array(predicted)
        canvas = ui.open_editor()
        done("open editor")
        assert f"mask version {parent_id}" in page.inner_text("#item-info")
        assert np.array_equal(canvas.shown(), base), "the canvas shows the stored mask"
        canvas.tool("brush")
        canvas.stroke(((0.15 * WIDTH, 0.8 * HEIGHT), (0.6 * WIDTH, 0.8 * HEIGHT)))
        canvas.tool("eraser")
        canvas.stroke(((0.3 * WIDTH, 0.8 * HEIGHT), (0.4 * WIDTH, 0.8 * HEIGHT)))
        expected = base
        for step in canvas.log():
            expected = shapes.stroke(expected, step["points"], step["size"], bool(step["value"]))
        shown = canvas.shown()
        assert np.array_equal(shown, expected), "the canvas shows the two strokes"
        done("paint two strokes")
        ui.screenshot(out / "3-editor.png")
        message = ui.save_correction()
        new_id = int(message.split("mask version ")[1].split()[0])
        toast = f"Saved mask version {new_id} (correction of {parent_id})"  # the toast, not the line below
        page.get_by_text(toast).first.wait_for(state="visible")
        done("save")
        ui.screenshot(out / "4-saved.png", full_page=True)
        page.wait_for_function(
            f"() => document.querySelector('#item-info').innerText.includes('mask version {new_id}')"
        )

    with app.backend.store.ReadSession() as session:
        saved = repo.latest_mask(session, expression_id)
        assert (saved.kind, saved.parent_id, saved.author, saved.status) == (
            "correction",
            parent_id,
            "browser-tester",
            "submitted",
        )
        mask = repo.mask_array(saved)
    assert f"mask version {saved.id}" in message
    assert mask.shape == (HEIGHT, WIDTH)  # the image's full resolution
    assert np.packbits(mask).tobytes() == np.packbits(shown).tobytes(), "saved = what the canvas showed"
    assert mask[int(0.8 * HEIGHT), int(0.2 * WIDTH)] and not mask[int(0.8 * HEIGHT), int(0.35 * WIDTH)]
    timings = {"segment_click_to_overlay_s": round(seconds, 3), "model": app.backend.model_name, "steps_s": steps}
    (out / "timings.json").write_text(json.dumps(timings, indent=2))


TABS = ("Segment", "Attention", "Correct", "Review queue", "Fine-tune", "Export")


def test_first_screen_on_a_phone_and_on_a_laptop(tmp_path):
    out = artifacts()
    with running_app(tmp_path) as app:
        with chromium_page(390, 844) as page:
            ui = AppPage(page, app.url)
            ui.open()
            title = page.locator("#title").bounding_box()
            assert title["width"] >= 300 and title["height"] <= 200, f"title squeezed: {title}"
            upload = page.locator("#upload").bounding_box()
            assert upload["y"] + 60 <= 844, f"the upload is below the first screen: {upload}"
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
            ui.screenshot(out / "phone-first-screen.png")
            for name in TABS:
                tab = page.get_by_role("tab", name=name)
                assert tab.is_visible(), f"tab {name} is hidden on a phone"
                tab.click()
                page.wait_for_function(
                    "name => [...document.querySelectorAll('[role=tab]')].some("
                    "t => t.innerText.trim() === name && t.getAttribute('aria-selected') === 'true')",
                    arg=name,
                )
            assert page.locator("footer .show-api").first.is_visible(), "Use via API is hidden on a phone"
        with chromium_page(1440, 900) as page:
            AppPage(page, app.url).open()
            button = page.locator("#segment-button").bounding_box()
            assert button["y"] + button["height"] <= 900, f"Segment is below the fold: {button}"
            examples = page.locator("#examples img")
            assert examples.count() >= 3 and examples.first.bounding_box()["y"] < 900
            page.screenshot(path=str(out / "laptop-first-screen.png"))


def test_canvas_keyboard_shortcuts_and_ctrl_s(tmp_path):
    out = artifacts()
    image = scene_png(tmp_path / "scene.png", HEIGHT, WIDTH)
    with running_app(tmp_path) as app, chromium_page(1100, 850) as page:
        ui = AppPage(page, app.url)
        ui.open(annotator="keyboard")
        ui.keep_untrusted()
        ui.segment(image, ["the pond"])
        canvas = ui.open_editor()
        for key, tool in [("e", "eraser"), ("p", "polygon"), ("r", "region"), ("h", "pan"), ("b", "brush")]:
            canvas.key(key)
            assert canvas.state()["tool"] == tool, key
        modes = []
        for _ in range(3):  # X cycles the mode: Auto (the start) -> Add -> Remove -> Auto
            canvas.key("x")
            modes.append(canvas.state()["mode"])
        assert modes == ["add", "remove", "auto"]
        canvas.key("]")
        assert canvas.state()["size"] == 14
        canvas.key("[")
        canvas.key("[")
        assert canvas.state()["size"] == 10
        canvas.key("]")
        before = canvas.shown()
        canvas.stroke(((0.15 * WIDTH, 0.8 * HEIGHT), (0.6 * WIDTH, 0.8 * HEIGHT)))
        after = canvas.shown()
        assert not np.array_equal(before, after)
        canvas.key("Control+z")
        assert np.array_equal(canvas.shown(), before), "Ctrl+Z undoes the stroke"
        canvas.key("Control+Shift+z")
        assert np.array_equal(canvas.shown(), after), "Ctrl+Shift+Z redoes it"
        canvas.key("Control+s")  # the page's shortcut: Save correction
        page.wait_for_function("() => /Saved/.test(document.querySelector('#save-info').innerText)")
        new_id = int(page.inner_text("#save-info").split("mask version ")[1].split()[0])
        with app.backend.store.ReadSession() as session:
            stored = repo.mask_array(repo.get_mask_version(session, new_id))
        assert np.array_equal(stored, after), "Ctrl+S saved what the canvas shows"
        ui.screenshot(out / "5-shortcuts.png")


def test_the_what_can_i_ask_chips_wrap_and_stay_readable(tmp_path):
    """The shipped model knows 21 classes (17 chips): on a laptop and on a phone every chip keeps
    its words on one line at their own width, the row wrapping instead of squeezing them (v5's
    first screenshot had them crushed into unreadable stacks of letters)."""
    from sbanet.inference.shipped import SHIPPED_MODEL

    with running_app(tmp_path, model=str(SHIPPED_MODEL)) as app:
        for width, height in ((1440, 900), (390, 844)):
            with chromium_page(width, height) as page:
                AppPage(page, app.url).open()
                chips = page.evaluate(
                    "() => [...document.querySelectorAll('.sbanet-chip')].map(c => ({text: c.innerText.trim(), "
                    "scroll: c.scrollWidth, client: c.clientWidth, height: c.getBoundingClientRect().height}))"
                )
                assert len(chips) >= 15, chips
                lowest = min(c["height"] for c in chips)
                for chip in chips:
                    assert chip["scroll"] <= chip["client"] + 1, f"{width}px: {chip['text']!r} is cut: {chip}"
                    assert chip["height"] < 1.5 * lowest, f"{width}px: {chip['text']!r} wraps: {chip}"
                row = page.locator("#what-can-i-ask").bounding_box()
                assert row["width"] <= width, f"{width}px: the chips push the page sideways: {row}"
