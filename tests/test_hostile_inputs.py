"""Hostile-input corpus, library and command line: every bad input is refused with a message
that says what and why (and nothing is written), or gives a correct result; never a misread.

The app's API gets the same treatment, on SQLite and PostgreSQL, in test_hostile_app.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hostile_files import blocky_picture, float_tiff, gray_png, oriented_image, rgba_png, sparse_tiff

from annotate.app.inputs import load_image, mask_from_file
from annotate.jobs.finetune_data import FinetuneConfig
from annotate.store.files import probe_image
from annotate.store.text import check_note, check_request_id, code_text, markdown_text
from sbanet import sbanet_tiny
from sbanet.checkpoint import save_pretrained
from sbanet.image import read_image, to_rgb8
from sbanet.inference.predictor import Predictor
from sbanet.predict import main

H, W = 40, 56


@pytest.fixture(scope="module")
def predictor(tokenizer):
    torch.manual_seed(0)
    return Predictor(sbanet_tiny(image_size=64).eval(), tokenizer)


def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def nan_bands() -> np.ndarray:
    """4 float bands: the first three (the default RGB) NaN everywhere, the fourth fine."""
    image = np.full((H, W, 4), np.nan, np.float32)
    image[..., 3] = 1.0
    return image


# --- the Python API: arrays and expressions -----------------------------------------------------
REFUSED_IMAGES = {
    "channel-first-uint8-rgb": (lambda: rgb().transpose(2, 0, 1), "channel-first"),
    "channel-first-float-4-bands": (lambda: rgb().transpose(2, 0, 1)[[0, 1, 2, 0]].astype(np.float32), "channel-first"),
    "all-nan-float": (lambda: np.full((H, W, 3), np.nan, np.float32), "no valid pixels"),
    "all-inf-float": (lambda: np.full((H, W), np.inf), "no valid pixels"),
    "nan-in-every-chosen-band": (nan_bands, "no valid pixels"),
    "empty-array": (lambda: np.zeros((0, W, 3), np.uint8), "empty or not 2-D"),
    "four-dimensional-batch": (lambda: rgb()[None], "empty or not 2-D"),
}


@pytest.mark.parametrize("case", list(REFUSED_IMAGES), ids=list(REFUSED_IMAGES))
def test_api_refuses_images_it_would_misread(predictor, case):
    make, message = REFUSED_IMAGES[case]
    with pytest.raises(ValueError, match=message):
        predictor.predict(make(), "the water")


REFUSED_EXPRESSIONS = {
    "nul-byte": ("the\x00water", "control character U\\+0000"),
    "ansi-escape": ("\x1b[31mthe water", "control character U\\+001B"),
    "c1-control": ("the water\x85", "control character U\\+0085"),
    "lone-surrogate": ("the \ud800 water", "control character U\\+D800"),
    "blank": ("  \t ", "the expression is empty"),
    "too-long": ("water " * 400, "the limit is 1000"),
    "not-a-string": (42, "must be a string"),
    "another-language": ("das Wasser", "the model understands English descriptions"),
    "emoji-only": ("🌊", "has no words"),
}


@pytest.mark.parametrize("case", list(REFUSED_EXPRESSIONS), ids=list(REFUSED_EXPRESSIONS))
def test_api_refuses_expressions_before_the_model_runs(predictor, case):
    expression, message = REFUSED_EXPRESSIONS[case]
    with pytest.raises(ValueError, match=message):
        predictor.predict(rgb(), expression)


def test_api_masks_nodata_out_of_every_output(predictor):
    image = np.linspace(0, 1, H * W * 3, dtype=np.float32).reshape(H, W, 3)
    image[:10] = np.nan
    prediction = predictor.predict(image, "everything", threshold=0.01)
    assert prediction.mask.shape == (H, W) and prediction.mask[10:].all()  # the random model: all above 0.01
    assert not prediction.mask[:10].any() and not prediction.probability[:10].any()


def test_api_reads_many_band_channels_last_arrays(predictor):
    image = np.random.default_rng(1).random((H, W, 20)).astype(np.float32)
    assert predictor.predict(image, "the field", return_attention=False).mask.shape == (H, W)
    assert to_rgb8(image).shape == (H, W, 3)


# --- files: decoded size, masks --------------------------------------------------------------------
def test_sparse_many_band_tiff_is_refused_from_its_header(tmp_path):
    bomb = sparse_tiff(tmp_path / "bomb.tif", 6000, 6000, 10)
    assert bomb.stat().st_size < 1000
    with pytest.raises(ValueError, match="MiB once decoded"):
        load_image(bomb)  # the three bands read: 864 MB
    with pytest.raises(ValueError, match="MiB once decoded"):
        read_image(bomb)  # all ten bands: 2.9 GB


def test_only_the_bands_used_count_towards_the_limit(tmp_path):
    image = load_image(sparse_tiff(tmp_path / "wide.tif", 300, 400, 10), bands=(9, 9, 9), max_bytes=1_000_000)
    assert image.rgb.shape == (300, 400, 3) and image.band_count == 10  # 960 kB of one band: read


MASK_FILES = {
    "rgb-mask-alpha-opaque-but-a-corner": "ambiguous",
    "coloured-mask": "has colours",
    "grey-levels": "must be binary",
    "wrong-size": "the image is 56×40",
}


def _mask_file(case: str, tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:30] = 255
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:4, :4] = 0
    return {
        "rgb-mask-alpha-opaque-but-a-corner": lambda: rgba_png(tmp_path / "m.png", np.dstack([mask] * 3), alpha),
        "coloured-mask": lambda: rgba_png(tmp_path / "m.png", np.dstack([mask, mask // 2, mask]), alpha * 0 + 255),
        "grey-levels": lambda: gray_png(tmp_path / "m.png", mask // 3),
        "wrong-size": lambda: gray_png(tmp_path / "m.png", mask[:, :50]),
    }[case]()


@pytest.mark.parametrize("case", list(MASK_FILES), ids=list(MASK_FILES))
def test_mask_files_that_could_be_misread_are_refused(tmp_path, case):
    with pytest.raises(ValueError, match=MASK_FILES[case]):
        mask_from_file(_mask_file(case, tmp_path), (H, W))


def test_mask_in_the_alpha_of_one_colour_and_opaque_rgba_are_read_correctly(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:30] = 255
    through_alpha = rgba_png(tmp_path / "alpha.png", (255, 0, 255), mask)
    np.testing.assert_array_equal(mask_from_file(through_alpha, (H, W)), mask > 0)
    opaque = rgba_png(tmp_path / "opaque.png", np.dstack([mask] * 3), np.full((H, W), 255, np.uint8))
    np.testing.assert_array_equal(mask_from_file(opaque, (H, W)), mask > 0)


# --- text fields and settings ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (check_note, "x" * 2_000_001, "the limit is 2,000"),
        (check_note, "ok\x00", "U\\+0000"),
        (check_request_id, "retry <1>", "may only hold"),
        (check_request_id, "x" * 65, "the limit is 64"),
    ],
    ids=["two-megabyte-note", "nul-in-note", "request-id-with-markup", "request-id-too-long"],
)
def test_text_fields_are_capped_and_plain(check, value, message):
    with pytest.raises(ValueError, match=message):
        check(value)


@pytest.mark.parametrize("lr", [1e30, float("nan"), float("inf"), 0.0, -1e-4, 1e-9], ids=str)
def test_finetune_learning_rate_outside_its_range_is_refused(lr):
    with pytest.raises(ValueError, match=r"learning rate must be from 1e-07 to 0\.01"):
        FinetuneConfig(lr=lr)


def test_markdown_shows_user_strings_literally():
    shown = markdown_text('<img src="http://host/b.png"> | *bold* [x](http://y)')
    assert not set('<>|*[]()"') & set(shown) and "http://" not in shown
    assert code_text("a ` b") == "``a ` b``"


# --- photos stored rotated, with an EXIF Orientation tag (phones, drones) ---------------------------
ORIENTATIONS = range(1, 9)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_is_applied_wherever_a_file_is_read(predictor, tmp_path, orientation):
    """Every reader returns the picture as viewers show it, so masks overlay the photo: the
    library, the predictor, the app's upload, a mask file and the store's probe (its size)."""
    shown = blocky_picture()
    photo = oriented_image(tmp_path / "photo.jpg", shown, orientation)
    assert np.abs(read_image(photo).astype(int) - shown).max() <= 2  # JPEG at quality 100
    assert predictor.predict(photo, "the water").mask.shape == shown.shape[:2]
    assert np.abs(load_image(photo).rgb.astype(int) - shown).max() <= 2
    info = probe_image(photo)
    assert (info.height, info.width) == shown.shape[:2]
    mask = np.zeros(shown.shape[:2], np.uint8)
    mask[:16, :32] = 255  # not symmetric: any flip or turn moves it
    mask_file = oriented_image(tmp_path / "mask.png", np.dstack([mask] * 3), orientation)
    np.testing.assert_array_equal(mask_from_file(mask_file, shown.shape[:2]), mask > 0)


def test_cli_masks_of_rotated_photos_overlay_them(checkpoint, tmp_path):
    """One command over the eight orientations: each mask file has the size viewers show."""
    shown = blocky_picture()
    for orientation in ORIENTATIONS:
        oriented_image(tmp_path / "photos" / f"o{orientation}.jpg", shown, orientation)
    main([str(tmp_path / "photos"), "the water", "--model", str(checkpoint), "-d", str(tmp_path / "out"), "-q"])
    masks = sorted((tmp_path / "out").glob("o*__*.tif"))
    assert len(masks) == len(ORIENTATIONS)
    for path in masks:
        assert read_image(path).shape[:2] == shown.shape[:2], path.name


# --- the command line: one line, exit 2, nothing written -------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-64"
    return save_pretrained(sbanet_tiny(image_size=64).eval(), folder, tokenizer=tokenizer)


CLI_CASES = {
    "all-nan-geotiff": (lambda d: float_tiff(d / "nan.tif", np.nan), "the water", "no valid pixels"),
    "all-inf-geotiff": (lambda d: float_tiff(d / "inf.tif", np.inf), "the water", "no valid pixels"),
    "nul-in-expression": (lambda d: gray_png(d / "s.png", rgb()[..., 0]), "the\x00water", "U\\+0000"),
    "german-expression": (lambda d: gray_png(d / "s.png", rgb()[..., 0]), "das Wasser", "understands English"),
}


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_refuses_with_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, case):
    make, expression, message = CLI_CASES[case]
    scene = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(scene), expression, "--model", str(checkpoint), "-o", str(tmp_path / "out" / "mask.png"), "-q"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error)
    assert sorted(tmp_path.rglob("*")) == before


# --- what the logs and the disk keep ----------------------------------------------------------------
def test_a_refusal_is_logged_as_one_line_without_traceback(caplog):
    import gradio as gr

    from annotate.app.guards import user_errors

    @user_errors
    def segment(path: str) -> None:
        raise ValueError(f"cannot read {path}: not an image")

    with caplog.at_level("INFO", logger="annotate"), pytest.raises(gr.Error) as refused:
        segment("/tmp/gradio/4f2a/upload.png")
    assert refused.value.message == "cannot read upload.png: not an image"  # no server path
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("refused segment: cannot read upload.png: not an image", None)
    ]


def test_loading_the_shipped_text_encoder_prints_no_report_or_bar(capfd):
    from sbanet.build import sbanet_lite_config
    from sbanet.modeling.text_encoder import TextEncoder

    TextEncoder(sbanet_lite_config(), pretrained=True)
    printed = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in printed and "Loading weights" not in printed and "UNEXPECTED" not in printed


def test_the_temporary_download_folder_is_removed_on_close(tmp_path):
    from annotate.app.downloads import Downloads

    downloads = Downloads()
    (downloads.new_dir() / "mask.png").write_bytes(b"png")
    root = downloads.root
    assert root.name.startswith("sbanet-app-") and any(root.rglob("mask.png"))
    downloads.close()
    assert not root.exists()
    given = Downloads(tmp_path / "mine")
    given.close()  # a folder the caller gave is the caller's
    assert (tmp_path / "mine").is_dir()
