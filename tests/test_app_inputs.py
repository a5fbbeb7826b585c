"""The app's input checks and pictures: uploads, expressions, canvas masks, overlays, attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import shared_data
from PIL import Image

from annotate.app import attention_view as views
from annotate.app import inputs
from annotate.app.render import (
    colourise,
    fit_within,
    mask_outline,
    overlay_mask,
)
from sbanet.inference.predictor import AttentionMaps


# --- uploads ----------------------------------------------------------------------------------
def test_decoded_uploads_decode_a_file_once_per_content_and_bands(tmp_path, monkeypatch):
    import os

    rgb = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    real, decoded = inputs.load_image, []

    def counting(path, bands=None, **options):
        decoded.append(bands)
        return real(path, bands, **options)

    monkeypatch.setattr(inputs, "load_image", counting)
    uploads = inputs.DecodedUploads(capacity=2)
    first = uploads.load(tmp_path / "a.png")
    assert uploads.load(str(tmp_path / "a.png")) is first and decoded == [None]  # the click reuses the preview's
    assert not first.rgb.flags.writeable  # shared by users: nobody may draw into it
    assert uploads.load(tmp_path / "a.png", (0, 0, 0)) is not first and decoded == [None, (0, 0, 0)]
    Image.fromarray(255 - rgb).save(tmp_path / "a.png")  # the same name, new content: decoded again
    os.utime(tmp_path / "a.png", ns=(1, 10**18))
    assert np.array_equal(uploads.load(tmp_path / "a.png").rgb, 255 - rgb) and len(decoded) == 3
    with pytest.raises(ValueError, match="is empty"):
        uploads.load(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="positive"):
        inputs.DecodedUploads(capacity=0)


def test_load_image_reads_png_and_multiband_16_bit_tiff(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    loaded = inputs.load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded.rgb, rgb)
    assert (loaded.band_count, loaded.dtype, loaded.size) == (3, "uint8", (30, 40))
    assert len(loaded.sha256) == 64

    bands = np.random.default_rng(1).integers(100, 4000, (5, 20, 24), dtype=np.uint16)  # planar 5-band
    tifffile.imwrite(tmp_path / "b.tif", bands, photometric="minisblack", planarconfig="separate")
    loaded = inputs.load_image(tmp_path / "b.tif", bands=inputs.parse_bands("5,4,3"))
    assert loaded.rgb.shape == (20, 24, 3) and loaded.rgb.dtype == np.uint8
    assert (loaded.band_count, loaded.dtype) == (5, "uint16")
    assert loaded.rgb[..., 0].max() == 255 and loaded.rgb[..., 0].min() == 0  # stretched per band


def test_georeferenced_multispectral_float_geotiff_keeps_its_crs():
    loaded = inputs.load_image(shared_data("spacenet-sample", "ms1.tif"), bands=inputs.parse_bands("3,2,1"))
    assert loaded.rgb.shape == (300, 300, 3) and loaded.rgb.dtype == np.uint8
    assert (loaded.band_count, loaded.dtype) == (4, "float64")
    assert loaded.geo is not None and loaded.geo.crs == "EPSG:32631"
    with pytest.raises(ValueError, match="4 band"):
        inputs.load_image(shared_data("spacenet-sample", "ms1.tif"), bands=inputs.parse_bands("5"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty"),
        ("junk.jpg", b"not a jpeg at all", "cannot read"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("junk.tif", b"II*\x00garbage", "cannot read"),
    ],
)
def test_bad_uploads_are_refused_with_the_reason(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        inputs.load_image(tmp_path / name)


def png_bomb(path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims ``width`` x ``height`` grey pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # only the first rows: never decoded anyway
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_huge_images_are_refused_from_the_header_before_decoding(tmp_path):
    png_bomb(tmp_path / "bomb.png", 30000, 30000)  # beyond Pillow's own bomb limit
    with pytest.raises(ValueError, match="30000×30000 pixels"):
        inputs.load_image(tmp_path / "bomb.png")
    png_bomb(tmp_path / "big.png", 8000, 8000)  # below it: Pillow would only warn
    with pytest.raises(ValueError, match="8000×8000 pixels"):
        inputs.load_image(tmp_path / "big.png")
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((3000, 3000), np.uint8))
    with pytest.raises(ValueError, match="sliding window"):
        inputs.load_image(tmp_path / "big.tif", max_pixels=1_000_000)


def test_bands_and_expressions_parsing():
    assert inputs.parse_bands("") is None and inputs.parse_bands(None) is None
    assert inputs.parse_bands("4, 3, 2") == (3, 2, 1)
    assert inputs.parse_bands("2") == (1,)
    for bad in ("0,1,2", "1,2", "a,b,c"):
        with pytest.raises(ValueError, match="bands must be"):
            inputs.parse_bands(bad)
    assert inputs.parse_expressions("the water\n\n  all   buildings \nthe water") == ["the water", "all buildings"]
    with pytest.raises(ValueError, match="at least one expression"):
        inputs.parse_expressions(" \n ")
    with pytest.raises(ValueError, match="limit is"):
        inputs.parse_expressions("x" * 2000)
    with pytest.raises(ValueError, match="at most 8"):
        inputs.parse_expressions("\n".join(f"object {i}" for i in range(9)))


# --- masks from the canvas and from files ------------------------------------------------------
def test_canvas_edit_at_the_same_size_is_the_canvas_mask():
    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:30] = True
    shown = mask.copy()
    shown[40:50, 40:70] = True
    shown[10:20, 10:30] = False
    result = inputs.canvas_edit(mask, shown)
    np.testing.assert_array_equal(result, shown)
    assert result is not shown


def test_canvas_edit_from_a_downscaled_canvas_changes_only_what_the_canvas_changed():
    """A picture larger than the canvas: the canvas's changes are brought back with nearest
    neighbour; pixels it did not change keep their full-resolution value (a one-pixel line
    the half-size canvas cannot show survives)."""
    mask = np.zeros((120, 160), bool)
    mask[5, :] = True  # thin: gone on the half-size canvas
    shown = inputs.resize_mask(mask, (60, 80)).copy()
    shown[10:20, 30:50] = True
    result = inputs.canvas_edit(mask, shown)
    assert result.shape == (120, 160) and result.dtype == bool
    expected = mask.copy()
    expected[20:40, 60:100] = True
    np.testing.assert_array_equal(result, expected)
    with pytest.raises(ValueError, match="reopen the item"):
        inputs.canvas_edit(mask, np.zeros((60, 60), bool))


def test_canvas_masks_are_read_from_black_and_white_pngs_of_their_size():
    from annotate.app.mask_canvas import canvas_value, png_url, read_canvas

    mask = np.zeros((30, 40), bool)
    mask[5:10, 5:20] = True
    value = canvas_value(mask, np.zeros((30, 40, 3), np.uint8), "k", "hi")
    assert value["image"].startswith("data:image/png;base64,") and value["key"] == "k"
    back = read_canvas(value)
    assert back.key == "k" and np.array_equal(back.mask, mask)
    assert read_canvas(None) is None and read_canvas({"key": "k"}) is None
    for bad, match in [
        ({**value, "width": 41}, "the picture 41×30"),
        ({**value, "mask": "data:image/png;base64,!!"}, "could not be read"),
        ({**value, "mask": png_url(np.full((30, 40), 9, np.uint8))}, "not black and white"),
        ({**value, "mask": "http://elsewhere/x.png"}, "no mask picture"),
        ({**value, "height": "tall"}, "without its size"),
        ({**value, "height": 100_000}, "out of range"),
    ]:
        with pytest.raises(ValueError, match=match):
            read_canvas(bad)
    with pytest.raises(ValueError, match="its mask"):
        canvas_value(mask, np.zeros((31, 40, 3), np.uint8))


def test_mask_files_must_be_binary_and_of_the_image_size(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:20] = 255
    Image.fromarray(mask).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(inputs.mask_from_file(tmp_path / "ok.png", (20, 30)), mask > 0)
    with pytest.raises(ValueError, match="the image is 40×20"):
        inputs.mask_from_file(tmp_path / "ok.png", (20, 40))
    Image.fromarray(np.arange(600, dtype=np.uint8).reshape(20, 30)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="binary"):
        inputs.mask_from_file(tmp_path / "grey.png", (20, 30))


# --- pictures ---------------------------------------------------------------------------------
def test_overlays_and_colour_maps():
    image = np.full((10, 12, 3), 100, np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:9] = True
    out = overlay_mask(image, mask, "#ff0000", alpha=0.5)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[3, 5]) == (178, 50, 50)  # inside: half red
    assert tuple(out[2, 3]) == (255, 0, 0)  # outline: red
    assert mask_outline(mask).sum() == 2 * 4 + 2 * 6 - 4
    heat = colourise(np.linspace(0, 1, 20).reshape(4, 5))
    assert heat.shape == (4, 5, 3) and heat.dtype == np.uint8 and not np.array_equal(heat[0, 0], heat[-1, -1])
    assert fit_within(np.zeros((2000, 1000, 3), np.uint8), 500).shape == (500, 250, 3)
    with pytest.raises(ValueError, match="differ in size"):
        overlay_mask(image, mask[:5], "#ff0000")


def _maps(tokens: list[str]) -> AttentionMaps:
    rng = np.random.default_rng(5)
    n = len(tokens)
    pixel_word = [rng.dirichlet(np.ones(n), size=(s, s)).astype(np.float32) for s in (16, 8, 4, 2)]
    query = [rng.dirichlet(np.ones(s * s)).reshape(s, s).astype(np.float32) for s in (16, 8, 4, 2)]
    relevance = [rng.dirichlet(np.ones(n)).astype(np.float32) for _ in range(4)]
    return AttentionMaps(tokens, pixel_word, query, relevance, rng.dirichlet(np.ones(4)).reshape(2, 2))


def test_word_pieces_merge_into_typed_words_with_unique_keys():
    words = views.merge_word_pieces(["[CLS]", "the", "play", "##ground", "near", "the", "water", "[SEP]"])
    assert [w.label for w in words] == ["[CLS]", "the", "playground", "near", "the", "water", "[SEP]"]
    assert [w.key for w in words][4] == "the (2)"
    assert words[2].tokens == (2, 3) and words[0].special
    assert views.word_choices(_maps(["[CLS]", "the", "play", "##ground", "[SEP]"])) == ["the", "playground"]


def test_attention_pictures_render_every_panel():
    maps = _maps(["[CLS]", "the", "play", "##ground", "[SEP]"])
    image = np.random.default_rng(6).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    for picture in (
        views.query_attention_image(image, maps),
        views.word_relevance_image(maps),
        views.pixel_word_image(image, maps, "playground"),
        views.tcsa_image(image, maps),
    ):
        assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
        assert picture.std() > 10  # drawn, not blank
    with pytest.raises(ValueError, match="not a word"):
        views.pixel_word_image(image, maps, "lake")
    lavt = AttentionMaps(maps.tokens, maps.pixel_word, [None] * 4, [None] * 4, None)  # no BAM / TCSA
    assert views.query_attention_image(image, lavt).shape[0] < 100  # a one-line explanation
    assert views.tcsa_image(image, lavt).shape[0] < 100


def test_display_png_is_encoded_once_into_a_file_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    rgb = np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    uploads = inputs.DecodedUploads()
    image = uploads.load(tmp_path / "a.png")
    path, size = uploads.display_png(image, 16)
    assert size == (12, 16) and path.endswith("display.png") and str(tmp_path / "gradio") in path
    assert np.asarray(Image.open(path)).shape == (12, 16, 3)
    stamp = Path(path).stat().st_mtime_ns
    assert uploads.display_png(image, 16) == (path, size)  # cached: not encoded again
    assert inputs.DecodedUploads().display_png(image, 16) == (path, size)  # another cache: the file is kept
    assert Path(path).stat().st_mtime_ns == stamp and not list(Path(path).parent.glob(".display-*"))
