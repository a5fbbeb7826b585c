"""The presence probe's pieces (benchmarks.presence_probe): the threshold honours the present-case
budget of every source, the verdict counts, and the head learns a separable rule."""

from __future__ import annotations

import numpy as np

from benchmarks.presence_probe import choose_threshold, fit_head, source_of, verdict_rates


def test_the_threshold_refuses_at_most_the_budget_of_each_source():
    # source "a": present cases at 0.05..0.95; source "b": present cases all high
    probability = np.concatenate([np.linspace(0.05, 0.95, 100), np.full(100, 0.9), np.full(50, 0.02)])
    present = np.concatenate([np.ones(200, bool), np.zeros(50, bool)])
    groups = np.array(["a"] * 100 + ["b"] * 100 + ["a"] * 50)
    threshold = choose_threshold(probability, present, groups, budget=0.03)
    refused_a = (probability[:100] < threshold).mean()
    assert refused_a <= 0.03
    assert (probability[:100] < threshold + 0.01).mean() > 0.03  # the largest such threshold
    assert choose_threshold(np.full(4, 0.001), np.ones(4, bool), np.array(["a"] * 4), 0.0) == 0.0


def test_verdict_rates_count_absent_caught_and_present_refused():
    refused = np.array([True, False, True, True])
    present = np.array([True, True, False, False])
    assert verdict_rates(refused, present) == {
        "absent": 2,
        "absent_nothing_found": 2,
        "present": 2,
        "present_refused": 1,
    }


def test_the_head_learns_a_separable_presence_rule_and_groups_are_balanced():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    present = x[:, 0] + 0.5 * x[:, 1] > 0
    groups = np.where(np.arange(400) < 300, "gid", "dubai")
    head = fit_head(x, present, groups, epochs=30)
    probability = head(x)
    assert probability.shape == (400,)
    assert ((probability > 0.5) == present).mean() > 0.9
    assert source_of("gid15_train") == "gid" and source_of("dubai_whole_val") == "dubai"
