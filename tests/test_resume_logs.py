"""Resuming with another global batch (refused, or rescaled on request) and what the two CSV
logs mean: the same epoch numbering, the same lr (the one a step used) and losses averaged the
same way, on the tiny preset at 32x32."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from training_fixtures import single_thread, toy_dataset

from sbanet import sbanet_tiny
from sbanet.training.engine import TrainConfig, train
from sbanet.training.train_state import load_training_checkpoint, resume_position
from train.logger import RunLogger


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def data(tokenizer):
    return toy_dataset(tokenizer, n_images=4, seed=0)  # 8 samples


def tiny():
    torch.manual_seed(0)
    return sbanet_tiny(image_size=32, max_tokens=8)


def stop_after(steps: int):
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > steps

    return cancel


@pytest.fixture
def half_run(data, tmp_path):
    """1 of 2 steps of global batch 4 (2 x accumulate 2; an epoch is 2 steps), then cancelled:
    ``last.pt`` mid-epoch."""
    config = TrainConfig(batch_size=2, accumulate=2, max_steps=2, lr=1e-3)
    result = train(tiny(), data, config=config, output_dir=tmp_path, cancel=stop_after(1))
    assert result.cancelled and result.steps == 1
    return tmp_path / "last.pt"


def test_a_changed_global_batch_is_refused(data, half_run):
    with pytest.raises(ValueError, match=r"global batch of 4.*this run's is 2.*--allow-batch-change"):
        train(tiny(), data, config=TrainConfig(batch_size=2, max_steps=2), resume=half_run)
    # the same per-process batch on another number of processes changes it too
    state = load_training_checkpoint(half_run)
    assert resume_position(state, 4, 2, 2, allow_batch_change=False).step == 1  # unchanged: as saved
    state["world_size"] = 2
    with pytest.raises(ValueError, match=r"global batch of 8 \(batch_size 2 x 2 process"):
        resume_position(state, 4, 2, 2, allow_batch_change=False)


def test_an_allowed_batch_change_rescales_the_schedule_and_says_so(data, half_run, caplog):
    events = []
    config = TrainConfig(batch_size=2, max_steps=2, lr=1e-3)
    with caplog.at_level(logging.WARNING, logger="sbanet.training.engine"):
        result = train(
            tiny(), data, config=config, resume=half_run, output_dir=half_run.parent,
            callback=events.append, allow_batch_change=True,
        )  # fmt: skip
    # 1 step of 4 samples = 2 steps of 2; max_steps 2 (the checkpoint's) -> 4: the same 8 samples
    assert "global batch changed 4" in caplog.text and "max_steps 2 -> 4" in caplog.text
    steps = [e for e in events if e.event == "step"]
    assert [e.step for e in steps] == [3, 4] and result.steps == 4
    assert {(e.epoch, e.epochs, e.total_steps) for e in steps} == {(0, 1, 4)}  # never "epoch 5/3"
    # the first resumed step uses the lr the old schedule had reached: the same fraction done
    assert steps[0].lr == pytest.approx(1e-3 * (1 - 2 / 4) ** 0.9)
    state = load_training_checkpoint(half_run)
    assert [c["global_batch"] for c in state["batch_changes"]] == [2]
    assert state["train_config"]["max_steps"] == 4  # in the new steps: a later resume agrees


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_steps_and_epochs_csv_agree(data, tmp_path):
    """Two epochs of 4 steps, every step logged: the epoch rows are what the step rows imply."""
    logger = RunLogger(tmp_path, log_every=1, tensorboard=False, plots=False, bar=False)
    train(tiny(), data, config=TrainConfig(batch_size=2, epochs=2, lr=1e-3), callback=logger)
    steps, epochs = read(tmp_path / "steps.csv"), read(tmp_path / "epochs.csv")
    assert [int(r["epoch"]) for r in steps] == [1] * 4 + [2] * 4  # 1-based, as epochs.csv
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    for row in epochs:
        mine = [r for r in steps if r["epoch"] == row["epoch"]]
        assert int(row["step"]) == int(mine[-1]["step"])
        assert float(row["lr"]) == float(mine[-1]["lr"])  # the lr the epoch's last step used
        mean = sum(float(r["loss"]) for r in mine) / len(mine)
        assert float(row["train_loss"]) == pytest.approx(mean)
    assert float(steps[0]["lr"]) == 1e-3  # step 1 ran at the base lr


def test_tied_epochs_keep_the_earliest_best(data, tmp_path, monkeypatch):
    """Every epoch scores the same val oIoU: ``best.pt`` stays the first epoch's."""
    import sbanet.training.engine as engine

    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: {"oIoU": 0.5, "mIoU": 0.5, "count": 8, "per_sample": []})
    result = train(tiny(), data, data, TrainConfig(batch_size=4, epochs=3, lr=1e-3), output_dir=tmp_path)
    assert [h["val_oIoU"] for h in result.history] == [0.5] * 3
    assert load_training_checkpoint(tmp_path / "best.pt")["epoch"] == 1
