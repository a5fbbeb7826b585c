"""'Adapt to my corrections' in a real browser (Debian's Chromium, Playwright) on the real app
(tiny model, real store): segment, correct a mask with the brush, save, adapt, watch the progress,
see the image before and after side by side, and go back to the previous version.

The store also holds imported accepted masks (train and held out) that cover each toy image
whole: what the quick run learns from them ("everything is foreground") is easy for the decoder
and clearly better on the held-out masks, so the adapted version is activated and "Go back" has a
version to return to. Screenshots go to ``$SBANET_TEST_ARTIFACTS/browser``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from app_server import BROWSER_TEST_MARKS, running_app, scene_png
from test_app_browser import HEIGHT, WIDTH, artifacts
from training_fixtures import toy_samples

from annotate.app.browser import AppPage, chromium_page
from annotate.store import runs
from annotate.store.transfer import import_samples

pytestmark = BROWSER_TEST_MARKS


def _whole(samples):
    """The samples with masks covering the whole image."""
    return [replace(s, load_mask=lambda s=s: np.ones(s.load_mask().shape, bool)) for s in samples]


def test_correct_save_adapt_see_before_after_and_go_back(tmp_path):
    out = artifacts()
    image = scene_png(tmp_path / "scene.png", HEIGHT, WIDTH)
    with running_app(tmp_path, adapt_after=1) as app, chromium_page(1100, 900) as page:
        store = app.backend.store
        import_samples(store, _whole(toy_samples(3, seed=0) + toy_samples(2, seed=1, split="val")))
        with store.ReadSession() as session:
            base = runs.active_model(session).id
        ui = AppPage(page, app.url)
        ui.open(annotator="adapter")
        ui.keep_untrusted()
        ui.segment(image, ["the pond"])
        canvas = ui.open_editor()
        canvas.stroke(((0.15 * WIDTH, 0.8 * HEIGHT), (0.6 * WIDTH, 0.8 * HEIGHT)))
        ui.save_correction()
        info = "() => /corrections to learn from/.test(document.querySelector('#adapt-info').innerText)"
        page.wait_for_function(info)
        assert "Ready" in page.inner_text("#adapt-info")

        ui.press("#adapt-button")
        page.wait_for_function("() => /█/.test(document.querySelector('#adapt-progress').innerText)")
        page.wait_for_function("() => /succeeded/.test(document.querySelector('#adapt-progress').innerText)")
        # the pictures load lazily: with the mask tools above them they start below the fold
        page.locator("#adapt-after").scroll_into_view_if_needed()
        page.wait_for_function("() => document.querySelector('#adapt-after img')?.naturalWidth > 0")
        progress = page.inner_text("#adapt-progress")
        assert "is now the active model" in progress, progress
        for picture in ("#adapt-before", "#adapt-after"):
            assert page.locator(f"{picture} img").first.evaluate("i => i.naturalWidth") > 100
        assert f"before: model version {base}" in page.inner_text("#adapt-before")
        ui.screenshot(out / "6-adapted.png", full_page=True)
        with store.ReadSession() as session:
            adapted = runs.active_model(session)
            assert adapted.id != base and adapted.parent_id == base and "quick" in adapted.name
            run = runs.list_runs(session)[-1]
            assert run.config["mode"] == "quick" and run.metrics_after["mIoU"] > run.metrics_before["mIoU"]
        assert f"after: model version {adapted.id}" in page.inner_text("#adapt-after")
        assert app.backend.model.version_id == adapted.id  # every user now segments with it

        ui.press("#adapt-back")
        page.wait_for_function("() => /Back to/.test(document.querySelector('#adapt-back-info').innerText)")
        with store.ReadSession() as session:
            assert runs.active_model(session).id == base
        assert app.backend.model.version_id == base
        ui.screenshot(out / "7-went-back.png", full_page=True)
