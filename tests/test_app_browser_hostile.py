"""Hostile input in a real browser (Debian's Chromium via Playwright): stored injection and
refusals on the page.

One client stores an expression carrying HTML and Markdown through the API; another user's
browser shows it in the Segment summary, the Correct tab and the review queue as the literal
text, makes no request outside the app (an ``<img src>`` that rendered would fetch), and a ``|``
does not split a table row. A refused Segment click (empty expression) warns once and leaves the
previous result on the screen.
"""

from __future__ import annotations

import pytest
from app_server import BROWSER_TEST_MARKS, running_app, scene_png

from annotate.app.browser import AppPage, chromium_page

pytestmark = BROWSER_TEST_MARKS
# an outside address the page must never contact, an inline handler, Markdown emphasis and a link
INJECTED = '<img src="http://192.0.2.7/b.png" onerror="document.title=1"> | **buildings** [x](http://192.0.2.7/)'


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One app and one Chromium page for the module (each costs seconds to start)."""
    folder = tmp_path_factory.mktemp("hostile-browser")
    with running_app(folder) as app, chromium_page(1280, 900) as page:
        yield app, page, scene_png(folder / "scene.png")


def test_injected_expression_is_shown_literally_and_fetches_nothing(browser):
    from gradio_client import Client, handle_file

    app, page, scene = browser
    client = Client(app.url, verbose=False)
    *_, details = client.predict(
        handle_file(str(scene)), INJECTED, "", 0.5, "mallory", keep_untrusted=True, api_name="/segment"
    )
    stored = details["results"][0]["mask_version"]
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((app.url, "data:", "blob:")) else outside.append(r.url))
    ui = AppPage(page, app.url)
    ui.open(annotator="reviewer")

    # another user's Correct tab: the stored expression, as typed
    ui.tab("Correct")
    page.fill("#mask-version input", str(stored))
    ui.press("#open-button")
    page.wait_for_function("() => document.querySelector('#item-info').innerText.includes('buildings')")
    assert INJECTED in page.inner_text("#item-info")
    assert page.locator("#item-info img, #item-info a").count() == 0
    assert page.locator("#item-info strong").first.inner_text() == INJECTED  # its own ** stayed text

    # the review queue lists it as text too
    ui.tab("Review queue")
    ui.press("#queue-button")
    page.wait_for_function("() => document.querySelector('#queue').innerText.includes('buildings')")
    assert INJECTED in page.inner_text("#queue") and page.locator("#queue img").count() == 0

    # the summary of one's own segmentation: one row, the expression in one cell
    ui.tab("Segment")
    ui.segment(scene, [INJECTED])
    summary = page.locator("#segment-summary")
    assert INJECTED in summary.inner_text() and summary.locator("img, a").count() == 0
    cells = summary.locator("tbody tr").first.locator("td")
    assert cells.count() == 6 and cells.nth(1).inner_text().strip() == INJECTED
    assert page.title() != "1" and outside == []


def test_a_refused_click_warns_and_keeps_the_previous_result(browser):
    app, page, scene = browser
    ui = AppPage(page, app.url)
    ui.open(annotator="tester")
    ui.segment(scene, ["the pond"])
    before = page.inner_text("#segment-summary")
    page.fill("#expressions textarea", "   ")
    ui.press("#segment-button")
    toast = page.locator(".toast-body").filter(has_text="type at least one expression")
    toast.first.wait_for()
    page.wait_for_timeout(500)  # any late update of the outputs would land by now
    assert toast.count() == 1 and "/tmp" not in toast.first.inner_text()
    assert page.inner_text("#segment-summary") == before and "Result 1:" in before
    assert page.locator("#overlay img").count() >= 1
    assert page.get_by_text("Error", exact=True).count() == 0  # no error badge over any output
