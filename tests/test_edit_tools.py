"""The mask tools of :mod:`annotate.edit` on small synthetic images (fast, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.edit import regions, shapes


def squares() -> tuple[np.ndarray, np.ndarray]:
    """A sand image with a dark roof (rows 8-32, cols 10-40) and a green field (rows 40-60,
    cols 50-76), and a mask that holds only the left half of the roof."""
    image = np.full((72, 96, 3), (200, 180, 120), np.uint8)
    image[8:32, 10:40] = (60, 50, 70)
    image[40:60, 50:76] = (40, 150, 50)
    noise = np.random.default_rng(0).integers(-6, 7, image.shape)
    image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    mask = np.zeros((72, 96), bool)
    mask[8:32, 10:25] = True
    return image, mask


def model_map() -> np.ndarray:
    """A probability map of :func:`squares` as a model that almost found the roof (0.30-0.40,
    below 0.5) and wrongly took the field (0.55-0.65) gives it; the sand 0.05-0.15."""
    rng = np.random.default_rng(1)
    probability = rng.uniform(0.05, 0.15, (72, 96))
    probability[8:32, 10:40] = rng.uniform(0.30, 0.40, (24, 30))
    probability[40:60, 50:76] = rng.uniform(0.55, 0.65, (20, 26))
    return probability.astype(np.float32)


def test_remove_specks_drops_only_small_pieces():
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[10:16, 10:16] = True  # 36 px
    mask[5, 18] = True  # 1 px
    cleaned = shapes.remove_specks(mask, 5)
    assert cleaned.sum() == 36 and cleaned[10:16, 10:16].all()
    assert shapes.remove_specks(mask, 1).sum() == mask.sum()
    with pytest.raises(ValueError, match="at least 1 pixel"):
        shapes.remove_specks(mask, 0)


def test_fill_holes_fills_enclosed_holes_up_to_the_area_and_never_the_outside():
    mask = np.zeros((30, 30), bool)
    mask[2:28, 2:28] = True
    mask[5:7, 5:7] = False  # a 4 px hole
    mask[12:20, 12:20] = False  # a 64 px hole
    mask[0:30, 29] = False
    assert shapes.fill_holes(mask, 10).sum() == mask.sum() + 4
    filled = shapes.fill_holes(mask)
    assert filled[2:28, 2:28].all() and not filled[0].any() and not filled[:, 29].any()
    notch = mask.copy()
    notch[12:16, 0:3] = False  # open to the border: not a hole
    assert not shapes.fill_holes(notch)[12:16, 0:2].any()
    with pytest.raises(ValueError, match="largest hole"):
        shapes.fill_holes(mask, 0)


def test_polygon_adds_and_cuts_out_with_straight_edges():
    # the canvas's coordinates: pixel (x, y) spans [x, x + 1), so corners at 5 and 31 hold pixels 5-30
    mask = np.zeros((40, 40), bool)
    added = shapes.polygon(mask, [(5, 5), (31, 5), (31, 21), (5, 21)])
    assert added[5:21, 5:31].all() and added.sum() == 16 * 26
    cut = shapes.polygon(added, [(10, 10), (21, 10), (21, 16), (10, 16)], add=False)
    assert not cut[10:16, 10:21].any() and cut.sum() == added.sum() - 6 * 11
    triangle = shapes.polygon(mask, [(0, 0), (40, 0), (0, 40)])
    assert triangle[0, 0] and triangle[0, 38] and not triangle[39, 39]
    # the same pixels as the canvas's rule: even-odd at pixel centres (a thin sliver holds none)
    assert not shapes.polygon(mask, [(3.6, 2), (3.9, 2), (3.9, 30)]).any()
    with pytest.raises(ValueError, match="at least 3 vertices"):
        shapes.polygon(mask, [(1, 1), (5, 5)])
    with pytest.raises(ValueError, match="inside the 40×40 image"):
        shapes.polygon(mask, [(1, 1), (50, 5), (5, 9)])


def test_a_stroke_paints_the_pixels_whose_centres_are_within_half_the_size():
    mask = np.zeros((30, 40), bool)
    dot = shapes.stroke(mask, [(10.5, 10.5)], 5)
    assert dot[10, 8:13].all() and dot[8:13, 10].all() and not dot[8, 8] and dot.sum() == 21
    line = shapes.stroke(mask, [(5.5, 20.5), (30.5, 20.5)], 3)
    assert line[19:22, 5:31].all() and line.sum() == 3 * 26 + 2 * 3  # a round cap of 3 pixels at each end
    erased = shapes.stroke(line, [(10.5, 20.5), (15.5, 20.5)], 3, add=False)
    assert not erased[19:22, 10:16].any() and erased[20, 5] and erased[20, 30]
    with pytest.raises(ValueError, match="at least 1 pixel"):
        shapes.stroke(mask, [(1, 1)], 0)
    with pytest.raises(ValueError, match="stroke points must lie inside"):
        shapes.stroke(mask, [(1, 1), (41, 1)], 3)


def test_an_auto_polygon_cuts_out_where_it_is_mostly_mask_and_adds_elsewhere():
    mask = np.zeros((40, 40), bool)
    mask[5:21, 5:31] = True
    inside = [(10, 10), (21, 10), (21, 16), (10, 16)]
    assert np.array_equal(shapes.polygon(mask, inside, add=None), shapes.polygon(mask, inside, add=False))
    outside = [(2, 25), (38, 25), (38, 35), (2, 35)]
    assert np.array_equal(shapes.polygon(mask, outside, add=None), shapes.polygon(mask, outside, add=True))
    # straddling: 16 of its 26 rows lie on the mask, so it cuts out; with 10 of 26 it adds
    assert not shapes.polygon(mask, [(8, 5), (13, 5), (13, 31), (8, 31)], add=None)[5:31, 8:13].any()
    assert shapes.polygon(mask, [(8, 11), (13, 11), (13, 37), (8, 37)], add=None)[11:37, 8:13].all()


def test_a_click_near_the_first_vertex_closes_the_polygon():
    points = [(10.0, 10.0), (30.0, 10.0), (30.0, 30.0)]
    assert shapes.closes_polygon(points, (12.0, 13.0))
    assert not shapes.closes_polygon(points, (20.0, 20.0))
    assert not shapes.closes_polygon(points[:2], (10.0, 10.0))  # two vertices make no polygon yet


def test_history_undoes_in_order_and_keeps_at_most_its_limit():
    masks = [np.eye(5, dtype=bool) * i for i in range(3)]
    history = shapes.History()
    for mask in masks:
        history = history.push(mask.astype(bool))
    mask, history = history.pop()
    assert np.array_equal(mask, masks[2].astype(bool)) and len(history) == 2
    for _ in range(shapes.MAX_UNDO + 5):
        history = history.push(np.ones((3, 7), bool))
    assert len(history) == shapes.MAX_UNDO
    with pytest.raises(ValueError, match="nothing to undo"):
        shapes.History().pop()
    odd = np.random.default_rng(1).random((13, 11)) > 0.5
    assert np.array_equal(shapes.unpack(shapes.pack(odd)), odd)


PROBABILITY = {method: model_map() if method == "model" else None for method in regions.METHODS}


@pytest.mark.parametrize("method", regions.METHODS)
def test_a_click_adds_the_missed_region_snapped_to_its_edges(method):
    image, mask = squares()
    roof = np.zeros_like(mask)
    roof[8:32, 10:40] = True
    added = regions.add_region(mask, image, (33, 20), method=method, probability=PROBABILITY[method])
    # the rest of the roof comes in, up to its edges: nothing of the sand or the field
    recall = (added & roof).sum() / roof.sum()
    assert recall >= 0.9, f"{method}: {recall:.2f} of the roof"
    assert (added & ~roof).sum() <= 0.05 * roof.sum(), f"{method} spilled {(added & ~roof).sum()} px"
    assert (added & mask).sum() == mask.sum()  # the old mask stays


@pytest.mark.parametrize("method", regions.METHODS)
def test_a_click_removes_a_false_region_and_leaves_the_rest(method):
    image, _ = squares()
    mask = np.zeros((72, 96), bool)
    mask[8:32, 10:40] = True  # the roof, rightly
    mask[40:60, 50:76] = True  # the field, wrongly
    removed = regions.remove_region(mask, image, (60, 50), method=method, probability=PROBABILITY[method])
    assert not removed[42:58, 52:74].any(), f"{method} left {removed[40:60, 50:76].sum()} px of the field"
    assert removed[8:32, 10:40].all()


@pytest.mark.parametrize("method", regions.METHODS)
def test_an_auto_click_adds_off_the_mask_and_removes_on_it(method):
    image, mask = squares()
    options = {"method": method, "probability": PROBABILITY[method]}
    assert regions.adds_at(mask, (33, 20)) and not regions.adds_at(mask, (15, 15))
    # off the mask: the rest of the roof comes in, as add_region
    added = regions.toggle_region(mask, image, (33, 20), **options)
    assert np.array_equal(added, regions.add_region(mask, image, (33, 20), **options))
    assert added.sum() > mask.sum()
    # on the mask: the wrongly taken field goes, as remove_region
    wrong = added.copy()
    wrong[40:60, 50:76] = True
    removed = regions.toggle_region(wrong, image, (60, 50), **options)
    assert np.array_equal(removed, regions.remove_region(wrong, image, (60, 50), **options))
    assert not removed[42:58, 52:74].any()
    with pytest.raises(ValueError, match="outside the 96×72 image"):
        regions.toggle_region(mask, image, (-1, 5))


def test_a_click_on_the_side_it_asks_for_changes_nothing_and_bad_clicks_are_refused():
    image, mask = squares()
    assert np.array_equal(regions.add_region(mask, image, (15, 15)), mask)  # already in the mask
    assert np.array_equal(regions.remove_region(mask, image, (80, 5)), mask)  # already outside
    with pytest.raises(ValueError, match="outside the 96×72 image"):
        regions.add_region(mask, image, (96, 5))
    with pytest.raises(ValueError, match="region method"):
        regions.add_region(mask, image, (30, 20), method="magic")
    with pytest.raises(ValueError, match="uint8"):
        regions.add_region(mask, image[:10], (30, 5))


def test_the_region_stays_within_the_window_around_the_click():
    image = np.full((100, 300, 3), 90, np.uint8)  # one flat region across the whole width
    mask = np.zeros((100, 300), bool)
    region = regions.click_region(mask, image, (150, 50), True, method="flood", window=40)
    columns = np.flatnonzero(region.any(0))
    assert region[50, 150] and columns.min() >= 110 and columns.max() <= 190


def test_region_sizes_reach_as_far_as_their_window_and_kept_superpixels_give_the_same_region():
    image = np.full((120, 900, 3), 90, np.uint8)  # one flat region across the whole width
    image[:, ::50] = 60  # faint stripes, so SLIC has edges to follow
    mask = np.zeros((120, 900), bool)
    reach = {}
    for name, scale in regions.SCALES.items():
        pixels = regions.superpixels(image, scale.area)
        region = regions.click_region(mask, image, (450, 60), True, scale=name, pixels=pixels)
        assert np.array_equal(region, regions.click_region(mask, image, (450, 60), True, scale=name))
        columns = np.flatnonzero(region.any(0))
        reach[name] = (columns.min(), columns.max())
        if scale.window is not None:
            assert 450 - scale.window <= columns.min() and columns.max() <= 450 + scale.window
    assert (
        reach["large"] == (0, 899) and reach["small"][1] - reach["small"][0] < reach["medium"][1] - reach["medium"][0]
    )
    with pytest.raises(ValueError, match="region size"):
        regions.add_region(mask, image, (5, 5), scale="huge")
    with pytest.raises(ValueError, match="superpixels are of"):
        regions.add_region(mask, image, (5, 5), pixels=regions.superpixels(image[:60], 60))


def test_the_model_region_is_the_piece_at_the_clicks_probability_and_needs_the_map():
    image, mask = squares()
    probability = model_map()
    added = regions.click_region(mask, image, (33, 20), True, method="model", probability=probability)
    roof = np.zeros_like(mask)
    roof[8:32, 25:40] = True
    assert np.array_equal(added, roof)  # the roof's missed half, not the sand nor the field
    sand = regions.click_region(mask, image, (90, 5), True, method="model", probability=probability)
    assert sand.sum() == (~mask).sum()  # from the sand: everything at least as likely as the sand
    with pytest.raises(ValueError, match="probability map"):
        regions.add_region(mask, image, (33, 20), method="model")
    with pytest.raises(ValueError, match="of the mask's size"):
        regions.add_region(mask, image, (33, 20), method="model", probability=probability[:10])
