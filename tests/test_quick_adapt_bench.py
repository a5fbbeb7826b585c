"""The quick-adaptation benchmark's pieces: the per-domain correction pool (left half of the
scene, quarter-crop strides, never overlapping the held-out and test strips) and the summary."""

from __future__ import annotations

import copy
import re

import numpy as np
import torch
from conftest import shared_data

from benchmarks import quick_adapt
from benchmarks.finetune_loop import MIN_COVERAGE, spacenet_crops
from benchmarks.quick_adapt import pool_crops, summarize


def test_the_pool_of_each_domain_stays_left_of_its_held_out_and_test_crops():
    data = shared_data("spacenet-sample").parent
    crops = spacenet_crops(data)
    for domain in ("building", "road"):
        pool = pool_crops(data, domain)
        assert len(pool) >= 30 and {s.category for s in pool} == {domain}  # N = 30 exists per domain
        assert all(s.load_mask().mean() >= MIN_COVERAGE for s in pool)
        right = max(int(re.search(r"-x(\d+)$", s.sample_id).group(1)) + s.load_mask().shape[1] for s in pool)
        held = [s for s in crops["val"] + crops["test"] if s.category == domain]
        left = min(int(re.search(r"-x(\d+)$", s.sample_id).group(1)) for s in held)
        assert right <= left
        assert np.asarray(pool[0].load_image()).dtype == np.uint16


def test_the_summary_averages_seeds_and_measures_forgetting_against_the_base():
    rows = [
        {
            "domain": "road",
            "n": 5,
            "rule": "random",
            "seed": s,
            "test_iou": v,
            "tile6_class_mIoU": t,
            "seconds": 9.0 + s,
        }
        for s, (v, t) in enumerate([(0.2, 0.48), (0.4, 0.46)])
    ]
    (entry,) = summarize(rows, {"tile6_class_mIoU": 0.5})
    assert entry["seeds"] == 2 and entry["max_seconds"] == 10.0
    assert np.isclose(entry["test_iou"], 0.3) and np.isclose(entry["forgetting"], 0.03)


def test_the_diverse_rules_spread_uncertainty_first_picks_over_unlike_crops():
    from benchmarks.quick_adapt import cluster_diverse, greedy_diverse, uncertainty_order

    # crops 0-3 alike and the least sure; 4-5 and 6-7 two other kinds
    described = np.array([[0, 0], [0, 0.1], [0.1, 0], [0.1, 0.1], [5, 5], [5, 5.1], [-5, 5], [-5, 5.1]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.3, 0.1, 0.15])
    assert uncertainty_order(scores)[:3] == [0, 1, 2]  # all three of one kind
    assert sorted(cluster_diverse(scores, described, 3)) == [0, 5, 7]  # the least sure of each kind
    greedy = greedy_diverse(scores, described, 3)
    assert greedy[0] == 0 and set(greedy[1:]) == {5, 7}
    assert greedy_diverse(scores, described, 5)[:3] == greedy  # nested in N
    assert len(set(cluster_diverse(scores, described, 8))) == 8


def test_a_cache_knows_the_weights_that_built_it():
    """A cache built from another base (v4's, read after v5 shipped) would be read as this base's
    features: the fingerprint of the weights, level and size tells them apart."""
    from sbanet.build import sbanet_tiny

    torch.manual_seed(0)
    one = sbanet_tiny()
    same = copy.deepcopy(one)
    assert quick_adapt.model_fingerprint(one, "head", 224) == quick_adapt.model_fingerprint(same, "head", 224)
    assert quick_adapt.model_fingerprint(one, "head", 224) != quick_adapt.model_fingerprint(one, "head", 320)
    with torch.no_grad():
        next(same.parameters()).add_(1e-3)
    assert quick_adapt.model_fingerprint(one, "head", 224) != quick_adapt.model_fingerprint(same, "head", 224)
