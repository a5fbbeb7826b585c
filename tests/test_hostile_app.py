"""Hostile-input corpus, the app's API (gradio_client against the real app on loopback, tiny
model), on SQLite and on PostgreSQL: every refusal says what and why, shows no server path, and
leaves the store (rows and files) exactly as it was; the inputs that must work give the right
result. One app server per backend for the whole module.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from app_server import running_app, scene_png
from hostile_files import blocky_picture, float_tiff, gray_png, oriented_image, rgba_png, sparse_tiff
from PIL import Image
from sqlalchemy import func, select
from store_backends import BACKENDS, backend_url

from annotate.store import repository as repo
from annotate.store.models import Expression, FineTuneRun, MaskVersion, StatusEvent
from annotate.store.models import Image as ImageRow

pytestmark = pytest.mark.slow
HEIGHT, WIDTH = 150, 210  # scene_png


@pytest.fixture(scope="module", params=BACKENDS)
def app(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    for url in backend_url(request.param, folder):
        with running_app(folder, store_url=url) as running:
            yield running


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def ctx(app, client, tmp_path_factory):
    """Files the cases send, and one segmentation whose mask version they try to correct."""
    from gradio_client import handle_file

    folder = tmp_path_factory.mktemp("files")
    scene = scene_png(folder / "scene.png")
    *_, details = client.predict(
        handle_file(str(scene)), "the pond", "", 0.5, "seed", keep_untrusted=True, api_name="/segment"
    )
    pond = np.zeros((HEIGHT, WIDTH), np.uint8)
    pond[20:70, 30:110] = 255
    corner = np.full((HEIGHT, WIDTH), 255, np.uint8)
    corner[:10, :10] = 0
    return {
        "folder": folder,
        "scene": scene,
        "parent": details["results"][0]["mask_version"],
        "pond": gray_png(folder / "pond.png", pond),
        "ambiguous": rgba_png(folder / "ambiguous.png", np.dstack([pond] * 3), corner),
        "small": gray_png(folder / "small.png", pond[:100]),
        "grey": gray_png(folder / "grey.png", pond // 2),
        "nan": float_tiff(folder / "nan.tif", np.nan),
        "bomb": sparse_tiff(folder / "bomb.tif", 6000, 6000, 10),
        "huge": sparse_tiff(folder / "huge.tif", 7000, 7000, 1, "uint8"),
        "empty": _write(folder / "empty.png", b""),
        "corrupt": _write(folder / "corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
        "text": _write(folder / "notes.txt", b"not an image"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def snapshot(app) -> tuple:
    """Row counts of every table users write, and every stored file (the database's own aside)."""
    with app.backend.store.ReadSession() as session:
        rows = tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (ImageRow, Expression, MaskVersion, StatusEvent, FineTuneRun)
        )
    files = sorted(
        str(p.relative_to(app.data_dir))
        for p in app.data_dir.rglob("*")
        if p.is_file() and "store.sqlite" not in p.name
    )
    return rows, files


def segment(file: str, expressions: str = "the pond", bands: str = "", name: str = "") -> tuple:
    return (file, expressions, bands, 0.5, name), "/segment"


def save(version: object, mask: str = "pond", note: str = "", name: str = "ana", request_id: str = "") -> tuple:
    return (version, mask, note, name, request_id), "/save_correction"


def status(version: object = "parent", value: str = "accepted", note: str = "", name: str = "ana") -> tuple:
    return (version, value, note, name), "/set_status"


def finetune(base: object = 1, steps: object = 10, lr: object = 1e-4, name: str = "ana") -> tuple:
    return (base, steps, 2, lr, True, False, name), "/start_finetune"


REFUSED = {
    # Segment: expressions, names, files
    "empty-expression": (segment("scene", ""), "at least one expression"),
    "nul-in-expression": (segment("scene", "the\x00pond"), r"control character U\+0000"),
    "ansi-escape-in-expression": (segment("scene", "\x1b[2Jthe pond"), r"U\+001B"),
    "nine-expressions": (segment("scene", "\n".join(f"thing {i}" for i in range(9))), "at most 8"),
    "expression-too-long": (segment("scene", "pond " * 300), "the limit is 1000"),
    "expression-in-german": (segment("scene", "the pond\ndas Wasser"), "the model understands English descriptions"),
    "expression-of-emoji": (segment("scene", "🌊🌊"), "has no words"),
    "nul-in-annotator-name": (segment("scene", name="ana\x00"), r"annotator name contains .*U\+0000"),
    "annotator-name-too-long": (segment("scene", name="a" * 101), "the limit is 100"),
    "all-nan-float-tiff": (segment("nan"), "no valid pixels"),
    "sparse-10-band-float64-tiff": (segment("bomb"), "MiB once decoded"),
    "49-megapixel-tiff": (segment("huge"), "more than this app decodes"),
    "band-beyond-the-file": (segment("scene", bands="4,5,6"), r"has 3 band\(s\)"),
    "bands-not-numbers": (segment("scene", bands="red"), "bands must be"),
    "empty-file": (segment("empty"), "is empty"),
    "corrupt-png": (segment("corrupt"), "cannot read corrupt.png"),
    "text-file": (segment("text"), r"Invalid file type.*\.png"),
    # Correct: ids, notes, masks, names, request ids
    "version-1.5": (save(1.5), "is not a mask version id"),
    "version-negative": (save(-3), "is not a mask version id"),
    "version-1e30": (save(1e30), "is not a mask version id"),
    "version-unknown": (save(99_999), "unknown mask version id 99999"),
    "version-not-a-number": (save("abc"), "'abc' is not a mask version id"),
    "note-5000-chars": (save("parent", note="n" * 5000), "the limit is 2,000"),
    "nul-in-note": (save("parent", note="ok\x00"), r"U\+0000"),
    "rgba-mask-rgb-vs-alpha": (save("parent", "ambiguous"), "ambiguous"),
    "mask-wrong-size": (save("parent", "small"), "the image is 210×150"),
    "mask-grey-levels": (save("parent", "grey"), "must be binary"),
    "no-annotator-name": (save("parent", name=""), "type your name"),
    "request-id-with-markup": (save("parent", request_id="<b>1</b>"), "may only hold"),
    # Review and queue
    "unknown-status": (status(value="approved"), "'approved'.* is not in the list of choices"),
    "bell-in-review-note": (status(note="ding\x07"), r"U\+0007"),
    "review-version-2.5": (status(2.5), "is not a mask version id"),
    "review-without-name": (status(name=""), "type your name"),
    "queue-unknown-status": ((("everything", "newest first", 10), "/review_queue"), "everything is not in the list"),
    # Fine-tune, models, export
    "learning-rate-1e30": (finetune(lr=1e30), "learning rate must be from"),
    "learning-rate-negative": (finetune(lr=-1e-4), "learning rate must be from"),
    "base-model-1.5": (finetune(base=1.5), "is not a model version id"),
    "steps-2.5": (finetune(steps=2.5), "steps must be a whole number"),
    "activate-model-1.5": (((1.5,), "/activate_model"), "is not a model version id"),
    "export-mask-1.5": (((1.5,), "/export_mask"), "is not a mask version id"),
    "finetune-status-run-1.5": (((1.5,), "/finetune_status"), "run must be a whole number"),
}


def _resolve(value: object, ctx: dict) -> object:
    from gradio_client import handle_file

    if value == "parent":
        return ctx["parent"]
    if isinstance(value, str) and value in ctx and isinstance(ctx[value], Path):
        return handle_file(str(ctx[value]))
    return value


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused_with_a_reason_and_nothing_stored(app, client, ctx, case):
    (args, endpoint), message = REFUSED[case]
    before = snapshot(app)
    with pytest.raises(Exception) as refused:
        client.predict(*[_resolve(a, ctx) for a in args], api_name=endpoint)
    text = str(refused.value)
    assert re.search(message, text), text
    assert "/tmp" not in text and str(app.data_dir) not in text
    assert snapshot(app) == before


# --- what must work -------------------------------------------------------------------------------
def test_injected_expression_is_stored_and_shown_literally(app, client, ctx):
    from gradio_client import handle_file

    injected = '<img src="http://127.0.0.1:9/b.png"> | buildings'
    _, _, _, summary, details = client.predict(
        handle_file(str(ctx["scene"])), injected, "", 0.5, "mallory", keep_untrusted=True, api_name="/segment"
    )
    assert "<img" not in summary and injected not in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "mask version" in line]
    assert len(rows) == 1 and rows[0].count("|") == 7  # six cells: the expression's "|" did not add a cell
    with app.backend.store.ReadSession() as session:
        version = repo.get_mask_version(session, details["results"][0]["mask_version"])
        assert version.expression.text == injected


def test_nodata_pixels_are_never_in_a_mask(client, ctx):
    from gradio_client import handle_file

    scene = float_tiff(ctx["folder"] / "half.tif", 0.0, nan_rows=12)
    _, _, files, *_ = client.predict(handle_file(str(scene)), "everything", "", 0.05, "", api_name="/segment")
    mask = np.asarray(Image.open(files[0]))
    assert mask.shape == (40, 56) and not mask[:12].any()


def test_a_photo_stored_rotated_gets_its_mask_as_viewers_show_it(app, client, ctx):
    """EXIF Orientation 6 (a phone held upright): the stored pixels are 80 x 48, viewers show
    48 x 80; the mask and the stored image's size are the shown ones."""
    from gradio_client import handle_file

    shown = blocky_picture()
    photo = oriented_image(ctx["folder"] / "phone.jpg", shown, 6)
    _, _, files, *_, details = client.predict(
        handle_file(str(photo)), "the water", "", 0.5, "ana", keep_untrusted=True, api_name="/segment"
    )
    assert np.asarray(Image.open(files[0])).shape[:2] == shown.shape[:2]
    assert (details["image"]["height"], details["image"]["width"]) == shown.shape[:2]
    with app.backend.store.ReadSession() as session:
        image = session.get(ImageRow, details["image"]["image_id"])
        assert (image.height, image.width) == shown.shape[:2]


def test_a_retried_save_returns_the_first_version(app, client, ctx):
    from gradio_client import handle_file

    args = (ctx["parent"], handle_file(str(ctx["pond"])), "retry me", "ana", "client-7f3a:1")
    first = client.predict(*args, api_name="/save_correction")
    stored = snapshot(app)
    again = client.predict(*args, api_name="/save_correction")
    assert again["mask_version"] == first["mask_version"] and snapshot(app) == stored
    other = (ctx["parent"], handle_file(str(_alpha_pond(ctx))), "", "ana", "client-7f3a:1")  # other content
    with pytest.raises(Exception, match="already saved mask version"):
        client.predict(*other, api_name="/save_correction")
    assert snapshot(app) == stored


def _alpha_pond(ctx: dict) -> Path:
    """The pond shifted, drawn in one colour through the alpha channel."""
    alpha = np.zeros((HEIGHT, WIDTH), np.uint8)
    alpha[30:80, 30:110] = 255
    return rgba_png(ctx["folder"] / "alpha-pond.png", (255, 0, 255), alpha)


def test_a_mask_in_the_alpha_channel_of_one_colour_is_saved(app, client, ctx):
    from gradio_client import handle_file

    saved = client.predict(
        ctx["parent"], handle_file(str(_alpha_pond(ctx))), "", "ana", "", api_name="/save_correction"
    )
    assert saved["area_px"] == 50 * 80
    with app.backend.store.ReadSession() as session:
        mask = repo.mask_array(repo.get_mask_version(session, saved["mask_version"]))
    assert mask[30:80, 30:110].all() and mask.sum() == 50 * 80
