"""Metrics against hand-computed values (LAVT / RMSIN test protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbanet.training.metrics import SegmentationMetrics, intersection_union, iou_from_counts


def _masks(*rows: str) -> torch.Tensor:
    """One sample per string: '1' foreground, '0' background, on a 1 x n grid."""
    return torch.tensor([[[int(c) for c in row]] for row in rows])


def test_intersection_union_and_empty_masks():
    pred = _masks("1100", "0000", "1111", "0000")
    target = _masks("1000", "0000", "0011", "1111")
    i, u = intersection_union(pred, target)
    assert i.tolist() == [1, 0, 2, 0] and u.tolist() == [2, 0, 4, 4]
    # U = 0 (both empty) gives IoU 0, not 1 and not NaN (LAVT's computeIoU)
    assert iou_from_counts(i, u).tolist() == [0.5, 0.0, 0.5, 0.0]
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        intersection_union(pred[0], target[0])


def test_hand_computed_protocol():
    # per sample: (I, U) = (8, 10) IoU 0.8 | (1, 10) IoU 0.1 | (0, 0) IoU 0 (empty, still counted)
    #             | (60, 100) IoU 0.6 | (7, 10) IoU 0.7
    metrics = SegmentationMetrics(categories=["car", "field"])
    i = torch.tensor([8, 1, 0, 60, 7])
    u = torch.tensor([10, 10, 0, 100, 10])
    iou = metrics.update_counts(i, u, ["car", "car", None, "field", "field"])
    assert iou.tolist() == [0.8, 0.1, 0.0, 0.6, 0.7]
    r = metrics.compute()
    assert r["count"] == 5
    assert r["mIoU"] == pytest.approx((0.8 + 0.1 + 0 + 0.6 + 0.7) / 5)  # 0.44
    assert r["oIoU"] == pytest.approx(76 / 130)  # 0.5846: the large sample dominates
    assert r["Pr@0.5"] == pytest.approx(3 / 5)
    assert r["Pr@0.6"] == pytest.approx(3 / 5)  # IoU 0.6 counts at 0.6 (>=)
    assert r["Pr@0.7"] == pytest.approx(2 / 5)
    assert r["Pr@0.8"] == pytest.approx(1 / 5)
    assert r["Pr@0.9"] == 0.0
    assert r["category_mIoU"] == pytest.approx({"car": 0.45, "field": 0.65})
    assert r["category_count"] == {"car": 2, "field": 2}


def test_oiou_and_miou_differ():
    # a large object segmented well and a small one missed: oIoU high, mIoU 0.5
    metrics = SegmentationMetrics()
    pred = torch.zeros(2, 10, 10, dtype=torch.long)
    target = torch.zeros(2, 10, 10, dtype=torch.long)
    pred[0] = target[0] = 1  # 100 of 100
    target[1, 0, 0] = 1  # 1 pixel missed
    metrics.update(pred, target)
    r = metrics.compute()
    assert r["mIoU"] == pytest.approx(0.5)
    assert r["oIoU"] == pytest.approx(100 / 101)


def test_all_empty_is_zero_not_nan():
    metrics = SegmentationMetrics()
    assert metrics.compute()["mIoU"] == 0.0 and metrics.compute()["count"] == 0
    metrics.update(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    r = metrics.compute()
    assert r["count"] == 3 and r["mIoU"] == r["oIoU"] == r["Pr@0.5"] == 0.0


def test_merging_states_equals_one_pass():
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.random((12, 8, 8)) > 0.5)
    target = torch.from_numpy(rng.random((12, 8, 8)) > 0.4)
    names = ["a", "b", "c"] * 4
    whole = SegmentationMetrics(categories=["a", "b", "c"])
    whole.update(pred, target, names)
    parts = [SegmentationMetrics(categories=["a", "b", "c"]) for _ in range(3)]
    for k, part in enumerate(parts):
        part.update(pred[k::3], target[k::3], names[k::3])
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    merged, expected = parts[0].compute(), whole.compute()
    for key in ("mIoU", "oIoU", "Pr@0.5", "Pr@0.9"):
        assert merged[key] == pytest.approx(expected[key])
    assert merged["category_mIoU"] == pytest.approx(expected["category_mIoU"])
    parts[0].all_reduce()  # no process group: a no-op
    assert parts[0].compute()["count"] == 12
    with pytest.raises(ValueError, match="different categories"):
        whole.merge(SegmentationMetrics())


def test_original_resolution_upsamples_the_probability():
    # a 2x2 probability whose right column is foreground; the original mask is 4x6
    probability = torch.tensor([[[0.1, 0.9], [0.1, 0.9]]])
    original = np.zeros((4, 6), bool)
    original[:, 3:] = True
    metrics = SegmentationMetrics()
    iou = metrics.update_original_resolution(probability, [original])
    assert iou.tolist() == [1.0]  # bilinear upsampling crosses 0.5 exactly at the middle column
    half = np.zeros((4, 6), bool)
    half[:, 4:] = True  # the target covers 2 of the predicted 3 columns
    assert metrics.update_original_resolution(probability, [half]).tolist() == pytest.approx([2 / 3])
    with pytest.raises(ValueError, match="need probability"):
        metrics.update_original_resolution(probability, [half, half])


def test_bad_inputs():
    metrics = SegmentationMetrics(categories=["a"])
    with pytest.raises(ValueError, match="not tracked"):
        metrics.update_counts(torch.tensor([1]), torch.tensor([2]), ["b"])
    with pytest.raises(ValueError, match="exceeds its union"):
        metrics.update_counts(torch.tensor([3]), torch.tensor([2]))
    with pytest.raises(ValueError, match="thresholds"):
        SegmentationMetrics(thresholds=[1.5])


def _reduce_worker(rank: int, world: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    metrics = SegmentationMetrics(categories=["a", "b"])
    # rank 0: IoU 1 (a); rank 1: IoU 0 with U = 3 (b)
    metrics.update_counts(torch.tensor([2 - 2 * rank]), torch.tensor([2 + rank]), ["a" if rank == 0 else "b"])
    metrics.all_reduce()
    queue.put(metrics.compute())
    dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_reduce_worker, args=(r, 2, str(tmp_path / "init"), queue)) for r in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    for r in results:
        assert r["count"] == 2 and r["mIoU"] == pytest.approx(0.5) and r["oIoU"] == pytest.approx(2 / 5)
        assert r["category_mIoU"] == {"a": 1.0, "b": 0.0}
