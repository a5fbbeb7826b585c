"""End to end through the Gradio API: the real app (tiny model, real store) on loopback.

The app runs with ``--auth`` so these tests also check that the signed-in user is the annotator
whatever name a client sends, and with a small ``max_file_size`` to check uploads are capped.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import tifffile
from app_server import running_app, scene_png
from PIL import Image

from annotate.store import repository as repo
from app import parse_args

pytestmark = pytest.mark.slow
USER, PASSWORD = "ana", "correct-horse"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("api"), auth=[(USER, PASSWORD)], max_file_size="2mb") as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, auth=(USER, PASSWORD), verbose=False)


@pytest.fixture(scope="module")
def segmented(app, client, tmp_path_factory):
    """One segmentation of a PNG scene with two expressions, shared by the tests below."""
    from gradio_client import handle_file

    path = scene_png(tmp_path_factory.mktemp("scene") / "scene.png")
    outputs = client.predict(
        handle_file(str(path)), "the pond\nthe road", "", 0.5, "someone else", keep_untrusted=True, api_name="/segment"
    )
    return path, outputs


def test_segment_returns_overlay_full_size_masks_and_records_predictions(app, segmented):
    _, (overlay, gallery, files, summary, details) = segmented
    assert [a["label"] for a in overlay["value"]["annotations"]] == ["the pond", "the road"]
    assert len(gallery) == 2 and "model `tiny-model`" in summary
    masks = [np.asarray(Image.open(f)) for f in files]
    assert all(m.shape == (150, 210) and set(np.unique(m)) <= {0, 255} for m in masks)
    with app.backend.store.Session.begin() as session:
        for result, mask in zip(details["results"], masks):
            version = repo.get_mask_version(session, result["mask_version"])
            assert (version.kind, version.status, version.author) == ("prediction", "draft", USER)
            assert version.model_version_id == app.backend.model.version_id
            assert version.expression.text == result["expression"]
            np.testing.assert_array_equal(repo.mask_array(version), mask > 0)
            assert 0.0 <= version.uncertainty <= 1.0


def test_multiband_16_bit_tiff_is_segmented(client, tmp_path):
    from gradio_client import handle_file

    bands = np.random.default_rng(0).integers(200, 3000, (4, 64, 96), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ms.tif", bands, photometric="minisblack", planarconfig="separate")
    *_, details = client.predict(
        handle_file(str(tmp_path / "ms.tif")), "the field", "4,3,2", 0.5, "", keep_untrusted=True, api_name="/segment"
    )
    assert (details["image"]["bands"], details["image"]["dtype"]) == (4, "uint16")
    assert (details["image"]["height"], details["image"]["width"]) == (64, 96)


def test_correction_review_and_queue_through_the_api(app, client, segmented, tmp_path):
    from gradio_client import handle_file

    _, (*_, details) = segmented
    parent = details["results"][0]["mask_version"]
    corrected = np.zeros((150, 210), np.uint8)
    corrected[20:70, 30:110] = 255
    Image.fromarray(corrected).save(tmp_path / "pond.png")
    saved = client.predict(
        parent, handle_file(str(tmp_path / "pond.png")), "drawn by hand", "mallory", api_name="/save_correction"
    )
    assert (saved["parent"], saved["author"], saved["area_px"]) == (parent, USER, 50 * 80)
    reviewed, history = client.predict(saved["mask_version"], "accepted", "ok", "", api_name="/set_status")
    assert reviewed["status"] == "accepted"
    assert [row[0] for row in history["data"]] == [saved["mask_version"], parent]
    with app.backend.store.Session.begin() as session:
        version = repo.get_mask_version(session, saved["mask_version"])
        assert (version.kind, version.parent_id, version.status, version.note) == (
            "correction",
            parent,
            "accepted",
            "drawn by hand",
        )
        np.testing.assert_array_equal(repo.mask_array(version), corrected > 0)
        assert [e.author for e in version.events] == [USER, USER]
    queue = client.predict("draft", "most uncertain first", 50, api_name="/review_queue")
    expressions = [row[2] for row in queue["data"]]
    assert "the road" in expressions and "the pond" not in expressions  # the pond's newest is accepted
    uncertainties = [row[6] for row in queue["data"]]
    assert uncertainties == sorted(uncertainties, reverse=True)


def test_attention_endpoint_draws_the_four_views(client, segmented):
    from gradio_client import handle_file

    path, _ = segmented
    pictures = client.predict(handle_file(str(path)), "the blue pond", "pond", "", api_name="/attention")
    assert len(pictures) == 4
    assert all(np.asarray(Image.open(p)).ndim == 3 for p in pictures)


@pytest.mark.parametrize(
    ("expressions", "message"),
    [("", "at least one expression"), ("x" * 1500, "the limit is 1000")],
)
def test_bad_input_gets_a_clear_error(client, segmented, expressions, message):
    from gradio_client import handle_file

    path, _ = segmented
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(path)), expressions, "", 0.5, "", api_name="/segment")


def test_corrupt_upload_and_wrong_size_mask_are_refused(app, client, segmented, tmp_path):
    from gradio_client import handle_file

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(Exception, match="cannot read"):
        client.predict(handle_file(str(tmp_path / "broken.png")), "the pond", "", 0.5, "", api_name="/segment")
    _, (*_, details) = segmented
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "tiny.png")
    with app.backend.store.Session.begin() as session:
        count = len(repo.history(session, details["results"][1]["expression_id"]))
    with pytest.raises(Exception, match="the image is 210×150"):
        client.predict(
            details["results"][1]["mask_version"],
            handle_file(str(tmp_path / "tiny.png")),
            "",
            "",
            api_name="/save_correction",
        )
    with app.backend.store.Session.begin() as session:
        assert len(repo.history(session, details["results"][1]["expression_id"])) == count


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_store_files_are_never_served_and_uploads_are_capped(app, client, tmp_path):
    from gradio_client import handle_file

    database = app.data_dir / "store.sqlite"
    assert database.is_file()
    for path in (database, next(app.data_dir.glob("images/*/*")), "/etc/passwd"):
        assert _status(f"{app.url}gradio_api/file={path}") in (401, 403, 404)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(3 * 1024 * 1024))  # 3 MB > the app's 2 MB limit
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        client.predict(handle_file(str(big)), "the pond", "", 0.5, "", api_name="/segment")


def test_auth_arguments():
    assert parse_args(["--auth", "ana:pw,ben:pw2"]).auth == [("ana", "pw"), ("ben", "pw2")]
    with pytest.raises(SystemExit):
        parse_args(["--auth", "nopassword"])


def test_unauthenticated_clients_are_turned_away(app):
    from gradio_client import Client

    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain ValueError here
        Client(app.url, verbose=False)
