"""The scripted annotator of ``benchmarks/correction_effort.py`` on a synthetic case (no model)."""

from __future__ import annotations

import numpy as np

from benchmarks import correction_effort as effort


def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sand image with one dark roof (the truth, 80×120 px) and a mask of its left quarter
    plus a false speck on the sand."""
    image = np.full((160, 200, 3), (200, 180, 120), np.uint8)
    image[40:120, 40:160] = (60, 50, 70)
    image = np.clip(image.astype(int) + np.random.default_rng(0).integers(-5, 6, image.shape), 0, 255)
    truth = np.zeros((160, 200), bool)
    truth[40:120, 40:160] = True
    mask = np.zeros_like(truth)
    mask[40:120, 40:70] = True
    mask[5:9, 5:9] = True
    return image.astype(np.uint8), truth, mask


def test_every_toolset_reaches_the_target_and_region_clicks_take_fewer_actions():
    image, truth, mask = case()
    picture = effort.Picture.of(image, np.where(truth, 0.4, 0.1).astype(np.float32))
    results = {t: effort.correct(picture, truth, mask, t, 0.9, 30) for t in effort.TOOLSETS}
    assert all(r["reached"] and r["iou"] >= 0.9 for r in results.values()), results
    assert set(results["brush"]["tools"]) == {"brush"}
    assert results["brush+region"]["actions"] < results["brush"]["actions"], results
    assert any(tool.startswith("region ") for tool in results["brush+region"]["tools"])
    assert "region model" not in results["brush+colour"]["tools"]
    assert results["brush"]["undo_depth"] == results["brush"]["actions"]  # one undo step per stroke


def test_a_change_of_setting_costs_an_action_when_asked():
    image, truth, mask = case()
    picture = effort.Picture.of(image)
    free, paid = (effort.correct(picture, truth, mask, "brush+region", 0.9, 30, cost) for cost in (0, 1))
    assert paid["actions"] == sum(paid["tools"].values()) + paid["setting_changes"]
    assert free["actions"] == sum(free["tools"].values())


def test_an_unreached_target_counts_as_the_cap_and_pieces_come_largest_first():
    image, truth, mask = case()
    capped = effort.correct(effort.Picture.of(image), truth, mask, "brush", 0.999, 2)
    assert not capped["reached"] and capped["actions"] == 2 and capped["actions_taken"] <= 2
    pieces = effort.error_pieces(mask, truth)
    assert [add for _, add in pieces] == [True] and pieces[0][0].sum() == 80 * 90  # the speck is below MIN_PIECE
    (x, y), depth = effort.inner_point(pieces[0][0])
    assert 70 <= x < 160 and 40 <= y < 120 and depth >= 30


def test_one_click_scores_every_method():
    image, truth, mask = case()
    picture = effort.Picture.of(image, np.where(mask, 0.9, 0.1).astype(np.float32))
    rows = effort.one_click(picture, truth, mask, 1)
    sizes = [f"superpixel {name}" for name in effort.regions.SCALES]
    assert [r["method"] for r in rows] == [*sizes, "model", "grabcut", "grabcut+probability", "flood"]
    assert all(0 <= r["recall"] <= 1 and 0 <= r["precision"] <= 1 for r in rows)
    assert max(r["recall"] for r in rows) >= 0.9 and max(r["iou_gain"] for r in rows) > 0.5


def test_the_auto_mode_spares_the_add_remove_switches_and_the_shortcuts_the_rest():
    """A case with a missed piece and a false one: with explicit Add / Remove the annotator must
    switch modes between them; in Auto the click decides; with the shortcuts (modifier clicks for
    the region's source, a right drag erasing) only a change of tool is left to pay for."""
    image, truth, mask = case()
    mask[130:150, 165:195] = True  # a false patch on the sand, large enough to be worth a click
    picture = effort.Picture.of(image)
    runs = {m: effort.correct(picture, truth, mask, "brush+region", 0.9, 30, 1, m) for m in effort.MODES}
    assert all(r["reached"] for r in runs.values()), runs
    assert runs["explicit"]["setting_changes"] > runs["auto"]["setting_changes"], runs
    assert runs["auto"]["actions"] < runs["explicit"]["actions"]
    assert runs["shortcuts"]["setting_changes"] <= runs["auto"]["setting_changes"]
    assert effort.mode_needs(None) == {} and effort.mode_needs(False) == {"mode": "remove"}
    assert effort.source_needs("large", "shortcuts") == {} and effort.source_needs("large", "auto") == {
        "region": "large"
    }
