"""The fine-tune loop benchmark's data and plan: SpaceNet crops in disjoint strips, nested
selections of N corrections, the summary over seeds (the runs themselves are the benchmark's)."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
from conftest import shared_data

from benchmarks.finetune_loop import MIN_COVERAGE, plan_tasks, spacenet_crops, summarize


def test_spacenet_crops_are_cut_from_disjoint_strips_of_each_scene():
    crops = spacenet_crops(shared_data("spacenet-sample").parent)
    assert {part: {s.split for s in samples} for part, samples in crops.items()} == {
        "pool": {"train"},
        "val": {"val"},
        "test": {"test"},
    }
    columns = {}  # (category, part) -> the x ranges its crops cover
    for part, samples in crops.items():
        assert {s.category for s in samples} == {"building", "road"}, part
        for sample in samples:
            image, mask = np.asarray(sample.load_image()), sample.load_mask()
            assert image.dtype == np.uint16 and image.shape[:2] == mask.shape  # as a user uploads it
            assert mask.mean() >= MIN_COVERAGE
            x = int(re.search(r"-x(\d+)$", sample.sample_id).group(1))
            columns.setdefault((sample.category, part), []).append((x, x + mask.shape[1]))
    for category in ("building", "road"):
        spans = {part: (min(a for a, _ in columns[category, part]), max(b for _, b in columns[category, part]))
                 for part in ("pool", "val", "test")}  # fmt: skip
        assert spans["pool"][1] <= spans["val"][0] and spans["val"][1] <= spans["test"][0], spans
    assert len({s.sample_id for samples in crops.values() for s in samples}) == sum(map(len, crops.values()))


def test_selections_are_nested_in_n_and_all_is_one_run_per_seed():
    args = argparse.Namespace(ns=[2, 5, "all"], seeds=[0, 1], rules=["uncertainty", "random"])
    order = [4, 2, 0, 1, 3, 5, 6]
    tasks = plan_tasks(args, order, 7)
    assert [t["n"] for t in tasks] == [7, 7, 5, 5, 5, 5, 2, 2, 2, 2]  # longest first
    assert [t["rule"] for t in tasks[:2]] == ["all", "all"]
    chosen = {(t["n"], t["rule"], t["seed"]): set(t["chosen"]) for t in tasks}
    assert chosen[5, "uncertainty", 0] == chosen[5, "uncertainty", 1] == {4, 2, 0, 1, 3}
    for seed in (0, 1):
        assert chosen[2, "random", seed] < chosen[5, "random", seed]
        assert chosen[2, "uncertainty", seed] == {4, 2}
    assert chosen[5, "random", 0] != chosen[5, "random", 1]
    with pytest.raises(ValueError, match="the correction pool has 7 crops"):
        plan_tasks(argparse.Namespace(ns=[8], seeds=[0], rules=["random"]), order, 7)


def test_the_summary_averages_seeds_and_measures_forgetting_against_the_base():
    def run(seed, building, tile6):
        after = {"building": building, "road": 0.1, "new_domain_mIoU": 0.2, "tile6_class_mIoU": tile6}
        return {"n": 5, "rule": "random", "seed": seed, "after": after, "seconds": 60.0 + seed}

    (entry,) = summarize([run(0, 0.3, 0.48), run(1, 0.5, 0.46)], {"tile6_class_mIoU": 0.5})
    assert entry["building"] == pytest.approx(0.4) and entry["forgetting"] == pytest.approx(0.03)
    assert (entry["seeds"], entry["max_seconds"]) == (2, 61.0)
